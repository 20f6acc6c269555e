"""Small networks in ONNX Runtime on the CPU: same outputs as torch at any batch size, exported once into
the model cache, a damaged cache file exported again, and torch kept when the export cannot be done."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from rtvi.core.models.cpu_runtime import Net, cpu_net


class TinyDetector(torch.nn.Module):
    """Depthwise + pointwise convolutions and two heads, as in the bundled networks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.depthwise = torch.nn.Conv2d(3, 3, 3, stride=2, padding=1, groups=3)
        self.pointwise = torch.nn.Conv2d(3, 8, 1)
        self.boxes = torch.nn.Conv2d(8, 4, 1)
        self.scores = torch.nn.Conv2d(8, 2, 1)

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        x = pixels.permute(0, 3, 1, 2).float() / 255
        h = torch.nn.functional.relu6(self.pointwise(self.depthwise(x)))
        return [self.boxes(h).flatten(1), torch.softmax(self.scores(h).flatten(2), dim=1)]


class NotExportable(TinyDetector):
    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        if float(pixels.float().mean()) > 300:  # data-dependent control flow: torch.export refuses it
            return [pixels]
        return super().forward(pixels)


SHAPE = (16, 20, 3)  # height, width, RGB


def exported(cache: Path) -> list[Path]:
    return sorted((cache / "onnx").glob("*.onnx"))


def load(
    module: torch.nn.Module, name: str, cache: Path | None, caplog: pytest.LogCaptureFixture
) -> tuple[Net, str]:
    """cpu_net(...) and what it logged."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rtvi.core.models.cpu_runtime"):
        net = cpu_net(module, SHAPE, name, cache)
    return net, caplog.text


def assert_same_as_torch(net: Net, module: torch.nn.Module) -> None:
    for batch in (1, 3, 8):
        x = torch.randint(0, 256, (batch, *SHAPE), dtype=torch.uint8)
        with torch.inference_mode():
            expected = module(x)
        got = net(x)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert g.shape == e.shape
            torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


def test_runs_in_onnx_runtime_at_any_batch_and_exports_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module = TinyDetector()
    net, logged = load(module, "tiny", tmp_path, caplog)
    assert "exporting tiny for ONNX Runtime" in logged and "runs in torch" not in logged
    (file,) = exported(tmp_path)
    assert file.name.startswith("tiny-") and file.stat().st_size > 0
    assert_same_as_torch(net, module)

    again, logged = load(module, "tiny", tmp_path, caplog)
    assert "exporting" not in logged  # loaded from the cache
    assert exported(tmp_path) == [file]
    assert_same_as_torch(again, module)

    # other weights are another file, never the stale one
    changed = TinyDetector()
    with torch.no_grad():
        changed.boxes.bias += 1
    assert_same_as_torch(cpu_net(changed, SHAPE, "tiny", tmp_path), changed)
    assert len(exported(tmp_path)) == 2


def test_a_damaged_cache_file_is_exported_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    module = TinyDetector()
    cpu_net(module, SHAPE, "tiny", tmp_path)
    (file,) = exported(tmp_path)
    file.write_bytes(b"not an onnx model")
    net, logged = load(module, "tiny", tmp_path, caplog)
    assert "ignoring unreadable" in logged and "exporting tiny" in logged
    assert file.read_bytes() != b"not an onnx model"
    assert_same_as_torch(net, module)


def test_torch_runs_when_the_network_cannot_be_exported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module = NotExportable()
    net, logged = load(module, "odd", tmp_path, caplog)
    assert "odd runs in torch" in logged and not net.in_onnx_runtime
    assert exported(tmp_path) == []
    assert_same_as_torch(net, module)


def test_without_a_cache_dir_it_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    module = TinyDetector()
    net, logged = load(module, "tiny", None, caplog)
    assert "exporting tiny" in logged and "runs in torch" not in logged and net.in_onnx_runtime
    assert_same_as_torch(net, module)


def test_onnx_runtime_can_be_switched_off(tmp_path: Path) -> None:
    module = TinyDetector()
    net = cpu_net(module, SHAPE, "tiny", tmp_path, onnx_runtime=False)
    assert exported(tmp_path) == [] and not net.in_onnx_runtime
    assert_same_as_torch(net, module)
