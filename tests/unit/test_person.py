"""The person detector: the TF-graph reader (SAME padding, folded batch norms, constant subgraphs) on
small graphs written with TensorFlow's own GraphDef protos, and the real SSDLite graph on real photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensorboard.compat.proto import graph_pb2, tensor_pb2, tensor_shape_pb2

from rtvi.core.models.bundled import COUNT_SCORE, PEOPLE_CONCEPTS, people_weights
from rtvi.core.models.person import Detections, PersonDetector
from rtvi.core.models.tfgraph import ConvNet, TfGraph, _SameConv, evaluate_constant
from rtvi.errors import ModelLoadError
from tests.media_factory import scene_photos

_FLOAT, _INT32 = 1, 3


# --- writing small GraphDefs -------------------------------------------------------------------------
class _Graph:
    def __init__(self) -> None:
        self.proto = graph_pb2.GraphDef()

    def node(self, name: str, op: str, *inputs: str, **attrs: Any) -> str:
        node = self.proto.node.add(name=name, op=op, input=list(inputs))
        for key, value in attrs.items():
            attr = node.attr[key]
            if isinstance(value, bool):
                attr.b = value
            elif isinstance(value, int):
                attr.i = value
            elif isinstance(value, float):
                attr.f = value
            elif isinstance(value, bytes):
                attr.s = value
            elif isinstance(value, list):
                attr.list.i.extend(value)
            elif isinstance(value, tuple) and value[0] == "type":
                attr.type = value[1]
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        dtype = _FLOAT if value.dtype == np.float32 else _INT32
        tensor = tensor_pb2.TensorProto(
            dtype=dtype,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in value.shape]
            ),
            tensor_content=value.tobytes(),
        )
        node = self.proto.node.add(name=name, op="Const")
        node.attr["value"].tensor.CopyFrom(tensor)
        return name

    def save(self, path: Path) -> TfGraph:
        path.write_bytes(self.proto.SerializeToString())
        return TfGraph(path)


def _tf_same(x: torch.Tensor, kernel: int, stride: int) -> list[int]:
    """TensorFlow's SAME padding (left, right, top, bottom), written out independently."""
    pads: list[int] = []
    for size in (x.shape[3], x.shape[2]):
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return pads


@pytest.mark.parametrize("size", [2, 3, 5, 10, 19, 150, 151])
@pytest.mark.parametrize(("kernel", "stride"), [(1, 1), (3, 1), (3, 2), (5, 2), (1, 2)])
def test_same_conv_reads_the_pixels_tensorflow_reads(size: int, kernel: int, stride: int) -> None:
    torch.manual_seed(size * 10 + kernel)
    weight, bias = torch.randn(6, 3, kernel, kernel), torch.randn(6)
    x = torch.randn(2, 3, size, size + 1)
    expected = F.conv2d(F.pad(x, _tf_same(x, kernel, stride)), weight, bias, stride)
    got = _SameConv(weight, bias, stride, groups=1)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_conv_net_folds_batch_norm_and_keeps_tensorflow_layout(tmp_path: Path) -> None:
    """input -> depthwise 3x3/2 + batch norm + ReLU6 -> 1x1 conv + bias -> reshape (n, -1, 2), as TF
    computes it: HWIO kernels, NHWC order in the reshape."""
    rng = np.random.default_rng(0)
    g = _Graph()
    g.node("input", "Placeholder")
    dw = rng.normal(size=(3, 3, 4, 1)).astype(np.float32)
    g.const("dw", dw)
    g.node("depthwise", "DepthwiseConv2dNative", "input", "dw", strides=[1, 2, 2, 1], padding=b"SAME")
    gamma, beta, mean = (rng.normal(size=4).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2, size=4).astype(np.float32)
    for name, value in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
        g.const(name, value)
    g.node("bn", "FusedBatchNorm", "depthwise", "gamma", "beta", "mean", "var", epsilon=0.001)
    g.node("relu", "Relu6", "bn")
    pw = rng.normal(size=(1, 1, 4, 6)).astype(np.float32)
    pb = rng.normal(size=6).astype(np.float32)
    g.const("pw", pw)
    g.const("pb", pb)
    g.node("project", "Conv2D", "relu", "pw", strides=[1, 1, 1, 1], padding=b"SAME")
    g.node("bias", "BiasAdd", "project", "pb")
    g.node("shape", "Shape", "bias")
    for name, value in (("b0", [0]), ("b1", [1]), ("s1", [1])):
        g.const(name, np.array(value, dtype=np.int32))
    g.node("batch", "StridedSlice", "shape", "b0", "b1", "s1", shrink_axis_mask=1)
    g.const("minus1", np.array(-1, dtype=np.int32))
    g.const("two", np.array(2, dtype=np.int32))
    g.node("new_shape", "Pack", "batch", "minus1", "two", axis=0)
    g.node("out", "Reshape", "bias", "new_shape")
    net = ConvNet(g.save(tmp_path / "g.pb"), "input", ["out"])
    assert [name for name, *_ in net._steps if name in ("bn", "relu", "bias")] == ["bn", "relu", "bias"]

    x = torch.from_numpy(rng.normal(size=(2, 4, 10, 10)).astype(np.float32))
    ref = F.conv2d(F.pad(x, _tf_same(x, 3, 2)), torch.from_numpy(dw).permute(2, 3, 0, 1), stride=2, groups=4)
    ref = (ref - torch.from_numpy(mean)[:, None, None]) / torch.sqrt(
        torch.from_numpy(var)[:, None, None] + 0.001
    )
    ref = ref * torch.from_numpy(gamma)[:, None, None] + torch.from_numpy(beta)[:, None, None]
    ref = F.conv2d(ref.clamp(0, 6), torch.from_numpy(pw).permute(3, 2, 0, 1), torch.from_numpy(pb))
    ref = ref.permute(0, 2, 3, 1).reshape(2, -1, 2)  # NHWC order, as TF reshapes
    (got,) = net(x)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_constant_subgraphs_evaluate_like_numpy(tmp_path: Path) -> None:
    g = _Graph()
    g.const("a", np.arange(6, dtype=np.float32).reshape(2, 3))
    g.const("two", np.array(2.0, dtype=np.float32))
    g.node("doubled", "Mul", "a", "two")
    for name, value in (("begin", [0, 1]), ("end", [0, 3]), ("strides", [1, 1])):
        g.const(name, np.array(value, dtype=np.int32))
    g.node("row", "StridedSlice", "doubled", "begin", "end", "strides", shrink_axis_mask=1)  # [0, 1:3]
    g.const("start", np.array(0, dtype=np.int32))
    g.const("limit", np.array(4, dtype=np.int32))
    g.const("delta", np.array(2, dtype=np.int32))
    g.node("range", "Range", "start", "limit", "delta")
    g.node("range_f", "Cast", "range", DstT=("type", _FLOAT))
    g.const("axis", np.array(0, dtype=np.int32))
    g.node("joined", "ConcatV2", "row", "range_f", "axis")
    g.node("check", "Assert", "joined")
    g.node("out", "Identity", "joined", "^check")
    g.node("weird", "Svd", "a")
    graph = g.save(tmp_path / "g.pb")
    np.testing.assert_array_equal(evaluate_constant(graph, "out"), [2.0, 4.0, 0.0, 2.0])
    with pytest.raises(ModelLoadError, match="Svd is not supported"):
        evaluate_constant(graph, "weird")
    with pytest.raises(ModelLoadError, match="no node 'missing'"):
        evaluate_constant(graph, "missing")


def test_unsupported_network_ops_fail_at_load(tmp_path: Path) -> None:
    g = _Graph()
    g.node("input", "Placeholder")
    g.node("out", "Softplus", "input")
    with pytest.raises(ModelLoadError, match="Softplus is not supported"):
        ConvNet(g.save(tmp_path / "g.pb"), "input", ["out"])


# --- the real detector --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detector(model_cache: Path) -> PersonDetector:
    return PersonDetector(torch.device("cpu"), cache_dir=model_cache)


def test_detector_finds_and_counts_people_in_real_photos(detector: PersonDetector) -> None:
    photos = scene_photos()
    found = dict(zip(photos, detector.detect(list(photos.values())), strict=True))
    for portrait in ("astronaut", "camera"):
        assert found[portrait].best > 0.9 and found[portrait].count(COUNT_SCORE) == 1, found[portrait]
    # the astronaut stands in the left two thirds of the photo, from near the top to the bottom edge
    ymin, xmin, ymax, xmax = found["astronaut"].boxes[0]
    assert ymin < 0.2 and ymax > 0.95 and xmin < 0.1 and 0.6 < xmax < 0.85
    assert found["two people"].count(COUNT_SCORE) == 2
    assert found["four people"].count(COUNT_SCORE) == 4
    for scene in ("cat", "rocket", "coffee"):
        assert found[scene].best == 0.0, found[scene]  # nothing scores even the 0.3 floor
    # best first, boxes inside the image
    for d in found.values():
        assert list(d.scores) == sorted(d.scores, reverse=True)
        assert ((d.boxes >= 0) & (d.boxes <= 1)).all()


def test_anchors_match_the_network_outputs(detector: PersonDetector) -> None:
    """19x19x3 + (10x10 + 5x5 + 3x3 + 2x2 + 1x1) x 6 anchors of SSDLite at 300 px, one per network row."""
    boxes, scores = detector._net(torch.zeros(2, 300, 300, 3, dtype=torch.uint8))
    assert boxes.shape == (2, 1917, 4) and scores.shape == (2, 1917)


def test_onnx_runtime_and_torch_find_the_same_people(detector: PersonDetector, model_cache: Path) -> None:
    in_torch = PersonDetector(torch.device("cpu"), cache_dir=model_cache, onnx_runtime=False)
    # Otherwise an export that fell back to torch would compare torch with itself.
    assert detector._net.in_onnx_runtime and not in_torch._net.in_onnx_runtime
    photos = list(scene_photos().values())
    for a, b in zip(detector.detect(photos), in_torch.detect(photos), strict=True):
        assert a.count(0.3) == b.count(0.3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_people_weights_follow_the_count() -> None:
    def found(*scores: float) -> Detections:
        return Detections(np.zeros((len(scores), 4), np.float32), np.array(scores, np.float32))

    assert not people_weights(found()).any()
    person = people_weights(found(0.9))
    assert person[0] == pytest.approx(0.9) and person[1:].sum() == 0
    two = people_weights(found(0.9, 0.6, 0.35))  # the third is below COUNT_SCORE
    texts = [c.text for c in PEOPLE_CONCEPTS]
    assert two[0] == pytest.approx(0.45) and two[texts.index(PEOPLE_CONCEPTS[1].text)] == pytest.approx(0.45)
    crowd = people_weights(found(*[0.8] * 7))
    assert crowd[0] == pytest.approx(0.4) and crowd[-1] == pytest.approx(0.4)


def test_the_detector_can_be_switched_off(model_cache: Path) -> None:
    """RTVI_DETECT_PEOPLE=false: no detector is loaded, the people concepts stay at zero, and the model
    is as blind to people as before issue 11."""
    from rtvi.core.models.bundled import load_bundled
    from rtvi.settings import Settings

    model = load_bundled(Settings(RTVI_DETECT_PEOPLE="false", NGC_MODEL_CACHE=str(model_cache)).model)  # type: ignore[call-arg]
    assert model._detector is None
    astronaut = scene_photos()["astronaut"]
    weights = model.concept_weights([astronaut])
    assert weights.shape == (1, 1000 + len(PEOPLE_CONCEPTS)) and not weights[0, 1000:].any()
    (person,) = model.embed_texts(["a person"])
    assert float(model.embed_frames([[astronaut]])[0] @ person) < 0.2
