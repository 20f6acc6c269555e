"""Where models run: RTVI_DEVICE -> a torch device, and the dtype that suits it.

torch is imported inside the functions, so a service whose model is remote never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtvi.errors import ModelLoadError

if TYPE_CHECKING:
    import torch


def resolve_device(setting: str) -> torch.device:
    """RTVI_DEVICE -> torch device: "auto" takes the GPU when there is one."""
    import torch

    choice = (setting or "auto").strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"RTVI_DEVICE={setting!r} is not a torch device (auto, cpu, cuda, cuda:N)"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"RTVI_DEVICE={setting!r} asks for a GPU but torch sees none")
    return device


def inference_dtype(device: torch.device) -> torch.dtype:
    """Half precision on GPUs only (bf16 where supported): CPU half-precision kernels are slow or missing."""
    import torch

    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
