"""Hardware video decoding (NVDEC through FFmpeg's CUDA hwaccel, via PyAV) for file sampling.

RTVI_HWACCEL: `auto` (CUDA when torch sees a CUDA device), `cuda` (always try), `none`. A file whose
decoder cannot get the device (no GPU, no driver) opens in software with one warning, and the device is
not asked for again. A stream the device has but NVDEC cannot decode (a codec or profile it lacks) is
decoded in software by FFmpeg itself, silently. The sampler's output is the same frames either way:
PyAV copies each decoded picture to system memory, and only the chosen frames are converted and resized.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

from av.codec.hwaccel import HWAccel

log = logging.getLogger(__name__)

HwaccelMode = Literal["auto", "cuda", "none"]
_failed = threading.Event()


def decode_accel(mode: HwaccelMode) -> HWAccel | None:
    """The hardware decoder to ask for, or None for software decoding."""
    if mode == "none":
        return None
    if mode == "auto":
        import torch

        if not torch.cuda.is_available():
            return None
    # Software fallback inside FFmpeg covers streams NVDEC cannot decode (it keeps the stream going).
    # primary_ctx: every decoder shares the device's primary CUDA context (torch's too) instead of
    # creating a context per opened file.
    return HWAccel(device_type="cuda", allow_software_fallback=True, options={"primary_ctx": "1"})


def hardware_failed() -> bool:
    """Whether a hardware decoder has failed to open in this process (it is not tried again)."""
    return _failed.is_set()


def hardware_fallback(exc: Exception) -> None:
    """A file opened in software after its hardware decoder could not get the device: say so once, and
    stop asking for the device."""
    if not _failed.is_set():
        _failed.set()
        log.warning("hardware decoding unavailable (%s): decoding in software", exc)
