"""Hardware decoding (RTVI_HWACCEL): the choice of device, the clean fallback to software where no
device can be had (every machine without a GPU), and NVDEC itself where a CUDA GPU exists."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from av.codec.hwaccel import HWAccel

from rtvi.core.media import hwaccel
from rtvi.core.media.chunks import ChunkParams, plan_chunks
from rtvi.core.media.hwaccel import decode_accel
from rtvi.core.media.sampler import FileFrameSampler
from tests.media_factory import make_clip

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("hw") / "clip.mp4", seconds=4, fps=30, width=320, height=240)


def sample(path: Path, accel: object) -> tuple[list[np.ndarray], bool]:
    chunks = plan_chunks(4.0, 30.0, ChunkParams(chunk_duration=2))
    with FileFrameSampler(path, 4, (160, 120), hwaccel=accel) as s:  # type: ignore[arg-type]
        frames = [f for c in s.sample(chunks) for f in c.frames]
        return frames, s.hardware


def test_the_mode_picks_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert decode_accel("none") is None
    forced = decode_accel("cuda")
    assert forced is not None and forced.allow_software_fallback  # streams NVDEC lacks still decode
    # auto asks for CUDA only where torch sees a device.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert decode_accel("auto") is not None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert decode_accel("auto") is None


@pytest.mark.skipif(HAS_CUDA, reason="checks the fallback on a machine without a CUDA device")
def test_without_a_device_cuda_falls_back_to_the_same_frames(
    clip: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hwaccel, "_failed", type(hwaccel._failed)())  # a fresh process's state
    software, on_device = sample(clip, None)
    assert not on_device
    device_asks = []
    real_open = av.open

    def spy(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("hwaccel") is not None:
            device_asks.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    with caplog.at_level(logging.WARNING, logger="rtvi.core.media.hwaccel"):
        fallback, on_device = sample(clip, decode_accel("cuda"))
        again, _ = sample(clip, decode_accel("cuda"))
    assert not on_device
    assert len(device_asks) == 1  # the device is asked for once, then files open in software
    assert len(fallback) == len(software) == 8
    for a, b, c in zip(software, fallback, again, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    warnings = [r for r in caplog.records if "hardware decoding unavailable" in r.getMessage()]
    assert len(warnings) == 1  # said once, then software directly


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (NVDEC)")
def test_nvdec_decodes_the_same_frames_on_the_gpu(clip: Path) -> None:
    software, _ = sample(clip, None)
    hardware, on_device = sample(clip, decode_accel("auto"))
    assert on_device, "the decoder did not use the GPU"
    # Without FFmpeg's software fallback, a decode that is not really on NVDEC fails instead of passing.
    strict, _ = sample(clip, HWAccel(device_type="cuda", allow_software_fallback=False))
    assert len(strict) == len(software)
    assert len(hardware) == len(software)
    for a, b in zip(software, hardware, strict=True):
        # H.264 decoding is bit-exact; the copy back from the GPU's NV12 may round colours differently.
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2


@pytest.mark.parametrize(
    ("codec", "force", "software"), [("av1", True, True), ("h264", True, False), ("av1", False, False)]
)
def test_force_sw_av1_decoder_keeps_av1_files_off_the_device(
    tmp_path: Path, clip: Path, codec: str, force: bool, software: bool
) -> None:
    """FORCE_SW_AV1_DECODER (the reference's variable): an AV1 file's job gets no hardware decoder while
    the service's other files keep it."""
    from rtvi.core.media.types import MediaInfo
    from rtvi.core.service import ServiceCore
    from rtvi.services.embed.spec import SPEC
    from rtvi.settings import Settings

    settings = Settings(ASSET_STORAGE_DIR=str(tmp_path), FORCE_SW_AV1_DECODER=force)  # type: ignore[call-arg]
    core = ServiceCore(SPEC.core, settings)
    core.hwaccel = HWAccel(device_type="cuda", allow_software_fallback=True)  # as RTVI_HWACCEL=cuda picks
    probed = MediaInfo("video", "mp4", codec, 320, 240, 4.0, 30.0)
    job: Any = core.file_job(object(), video=clip, probed=probed)  # type: ignore[arg-type]
    assert (job.hwaccel is None) is software
    core.decode_pool.shutdown()
