"""The bundled model's networks on the CPU through ONNX Runtime.

The two convolutional networks (EfficientNet-Lite0, SSDLite-MobileNetV2) are mostly depthwise and 1x1
convolutions on small inputs, where torch's CPU kernels are slow: on 2 cores at batch 8, ONNX Runtime runs
them about 2-3x faster (bench/people_bench.py prints both). MiniLM's text encoder runs a short text about
3x as fast there (torch's per-op overhead dominates at batch 1; bench/text_bench.py). So on the CPU
each network is exported once with torch.onnx (the dynamo exporter, batch and sequence sizes left free)
into the model cache, keyed by its weights, and later starts load the file instead. On a GPU,
and wherever the export or its check fails, the torch module runs as before (with a warning in the
second case).

The networks include their own pre- and post-processing (pixel scaling, softmax, box decoding, mean
pooling): run in the graph, those cost a fraction of what torch's small-tensor ops cost per call.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtvi.core.models.common import save_to_cache

log = logging.getLogger(__name__)

# Bump when the export changes (exporter options, input layout), so stale files are not reused.
_EXPORT_VERSION = "2"
# The exported network must agree with the torch module on the check input to this absolute error.
_CHECK_TOLERANCE = 1e-3
# The largest size of a free axis (batch, sequence): the bundled networks take up to 1024 frames or texts.
_MAX_DIM_SIZE = 1024

# The network's inputs by name (in its forward()'s order) -> its outputs.
Run = Callable[[Mapping[str, torch.Tensor]], list[torch.Tensor]]


@dataclass(frozen=True, slots=True)
class Net:
    """A batch of uint8 RGB pixels (n, height, width, 3) -> the network's outputs, in ONNX Runtime or in
    torch (`in_onnx_runtime` says which: an export that failed falls back quietly but for a warning)."""

    run: Callable[[torch.Tensor], list[torch.Tensor]]
    in_onnx_runtime: bool

    def __call__(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        return self.run(pixels)


def cpu_net(
    module: torch.nn.Module,
    input_shape: tuple[int, int, int],
    name: str,
    cache_dir: Path | None,
    *,
    onnx_runtime: bool = True,
) -> Net:
    """`module`, which takes uint8 pixels (n, H, W, 3) with `input_shape` = (H, W, 3) and does its own
    scaling (so that it runs inside the exported graph too), as a `Net`: in ONNX Runtime when the module
    lives on the CPU (and `onnx_runtime`), else (or when the export fails) in torch."""
    module = module.eval()
    if onnx_runtime and on_cpu(module):
        # Batch 2: torch.export would take a batch of 1 for a constant. Random pixels for the check.
        generator = torch.Generator().manual_seed(0)
        example = torch.randint(0, 256, (2, *input_shape), dtype=torch.uint8, generator=generator)
        run = onnx_run(module, {"x": example}, {"x": {0: "batch"}}, name, cache_dir)
        if run is not None:
            return Net(lambda x: run({"x": x}), in_onnx_runtime=True)
    # channels_last: oneDNN runs depthwise convolutions faster in this layout (and NHWC pixels permuted
    # to NCHW are already laid out so).
    module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing in the stubs
    return Net(lambda x: _as_list(module(x)), in_onnx_runtime=False)


def on_cpu(module: torch.nn.Module) -> bool:
    return next(module.parameters()).device.type == "cpu"


def onnx_run(
    module: torch.nn.Module,
    example: Mapping[str, torch.Tensor],
    dynamic: Mapping[str, Mapping[int, str]],
    name: str,
    cache_dir: Path | None,
) -> Run | None:
    """`module` (in eval mode, on the CPU) exported and run in ONNX Runtime, or None, with a warning, when
    it cannot be. `example`: one input per forward() argument, in order, used to export and to check the
    export against torch; `dynamic`: the axes of each input left free, named (axes of one name share a
    size), e.g. {"ids": {0: "batch", 1: "sequence"}}."""
    try:
        session = _session(module, example, dynamic, name, cache_dir)
    except Exception as exc:  # the exporter's and the runtime's own errors: torch still works
        reason = (str(exc).strip().splitlines() or [""])[0]  # exporter errors run long
        log.warning(
            "%s runs in torch: cannot run it in ONNX Runtime (%s: %s)", name, type(exc).__name__, reason
        )
        return None

    def run(inputs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        return [torch.from_numpy(o) for o in session.run(None, {k: v.numpy() for k, v in inputs.items()})]

    return run


def _as_list(out: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)


def _session(
    module: torch.nn.Module,
    example: Mapping[str, torch.Tensor],
    dynamic: Mapping[str, Mapping[int, str]],
    name: str,
    cache_dir: Path | None,
) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle worker threads sleep rather than spin: the decoders need those cores between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = _cache_path(module, example, dynamic, name, cache_dir)
    if path is not None and path.is_file():
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged cache file is exported again
            log.warning("ignoring unreadable %s in the model cache: %s", path, exc)
    started = time.perf_counter()
    log.info("exporting %s for ONNX Runtime (done once: cached for the next start)", name)
    model = _export(module, example, dynamic)
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = _as_list(module(*example.values()))
    got = session.run(None, {k: v.numpy() for k, v in example.items()})
    error = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True))
    if error > _CHECK_TOLERANCE:
        raise ValueError(f"the exported network differs from torch by {error:.2g}")
    if path is not None:
        save_to_cache(path, model)
    log.info("%s exported in %.1f s", name, time.perf_counter() - started)
    return session


def _export(
    module: torch.nn.Module, example: Mapping[str, torch.Tensor], dynamic: Mapping[str, Mapping[int, str]]
) -> bytes:
    dims: dict[str, Any] = {}
    for axes in dynamic.values():
        for dim_name in axes.values():
            dims.setdefault(dim_name, torch.export.Dim(dim_name, min=1, max=_MAX_DIM_SIZE))
    shapes = tuple({axis: dims[dim_name] for axis, dim_name in dynamic.get(k, {}).items()} for k in example)
    with _exporter_quiet(), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.onnx"
        torch.onnx.export(
            module,
            tuple(example.values()),
            str(path),
            input_names=list(example),
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        return path.read_bytes()


def _cache_path(
    module: torch.nn.Module,
    example: Mapping[str, torch.Tensor],
    dynamic: Mapping[str, Mapping[int, str]],
    name: str,
    cache_dir: Path | None,
) -> Path | None:
    """A file name that changes with the weights, the inputs (free axes as names), the free axes' limit,
    torch, ONNX Runtime and this module's export."""
    if cache_dir is None:
        return None
    import onnxruntime

    inputs = " ".join(
        f"{k}:{[dynamic.get(k, {}).get(axis, size) for axis, size in enumerate(v.shape)]}:{v.dtype}"
        for k, v in example.items()
    )
    versions = f"{_EXPORT_VERSION} {_MAX_DIM_SIZE} {torch.__version__} {onnxruntime.__version__}"
    digest = hashlib.sha256(f"{versions} {inputs}".encode())
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy())  # hashed in place, no bytes copy
    return cache_dir / "onnx" / f"{name}-{digest.hexdigest()[:16]}.onnx"


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """The exporter narrates each pass at INFO and warns about things that do not apply here (torchvision
    ops, deprecations): a service log shows only our own line about the export."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
