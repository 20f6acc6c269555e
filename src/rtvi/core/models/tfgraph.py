"""Run parts of a frozen TensorFlow GraphDef without TensorFlow.

The person detector ships as a TF 1.x frozen graph (weights are Const nodes). We read it with the
GraphDef protos that the `tensorboard` wheel carries and rebuild the pieces we need:

- `ConvNet`: the convolutional part (Conv2D / depthwise / batch norm / ReLU6 / adds / reshapes /
  concat) as a torch module, batch norms folded into the convolutions at load time;
- `evaluate_constant`: a small numpy interpreter for subgraphs whose inputs are all constants (the SSD
  anchor generator), so the anchors are the ones the graph itself computes, not a re-derivation.

Only the ops these parts use are implemented; any other op raises a clear error at load time, so a
different graph fails at start-up rather than giving wrong numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from rtvi.errors import ModelLoadError

# tensorflow/core/framework/types.proto
_DTYPES: dict[int, Any] = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_}


class TfGraph:
    """The nodes of a frozen GraphDef by name, with their constant values."""

    def __init__(self, path: Path) -> None:
        try:
            from tensorboard.compat.proto import graph_pb2
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise ModelLoadError("the tensorboard package (TensorFlow's graph protos) is missing") from exc
        graph = graph_pb2.GraphDef()
        try:
            graph.ParseFromString(path.read_bytes())
        except Exception as exc:
            raise ModelLoadError(f"cannot read the TensorFlow graph {path}: {exc}") from exc
        self.nodes = {node.name: node for node in graph.node}
        self._consumers: dict[str, list[str]] = {}
        for node in graph.node:
            for ref in node.input:
                self._consumers.setdefault(_node_name(ref), []).append(node.name)

    def node(self, name: str) -> Any:
        try:
            return self.nodes[_node_name(name)]
        except KeyError as exc:
            raise ModelLoadError(f"the graph has no node {name!r}") from exc

    def const(self, name: str) -> npt.NDArray[Any]:
        """The value of a Const node, following Identity nodes (frozen variables are Const -> Identity)."""
        node = self.node(name)
        while node.op == "Identity":
            node = self.node(node.input[0])
        if node.op != "Const":
            raise ModelLoadError(f"graph node {name!r} is a {node.op}, not a constant")
        return _tensor_value(node.attr["value"].tensor)

    def consumers(self, name: str) -> list[str]:
        return self._consumers.get(name, [])


def _node_name(ref: str) -> str:
    """'^name' (control input) and 'name:1' (second output) -> 'name'."""
    return ref.lstrip("^").split(":")[0]


def _tensor_value(tensor: Any) -> npt.NDArray[Any]:
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise ModelLoadError(f"unsupported constant dtype {tensor.dtype}")
    shape = [d.size for d in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape).copy()
    values = {
        np.float32: tensor.float_val,
        np.float64: tensor.double_val,
        np.int32: tensor.int_val,
        np.int64: tensor.int64_val,
        np.bool_: tensor.bool_val,
    }[dtype]
    flat = np.array(list(values), dtype=dtype)
    count = math.prod(shape)
    if flat.size == count:
        return flat.reshape(shape)
    # TF stores a tensor whose elements are all equal as one value.
    return np.full(shape, flat[-1] if flat.size else 0, dtype=dtype)


# --- constant subgraphs in numpy ------------------------------------------------------------------


def _strided_slice(node: Any, x: Any, begin: Any, end: Any, strides: Any) -> Any:
    attr = node.attr
    if attr["ellipsis_mask"].i or attr["new_axis_mask"].i:
        raise ModelLoadError(f"{node.name}: StridedSlice with ellipsis or new axes is not supported")
    index: list[Any] = []
    shrink: list[int] = []
    for axis, (b, e, s) in enumerate(zip(begin, end, strides, strict=True)):
        if attr["shrink_axis_mask"].i >> axis & 1:
            index.append(int(b))
            shrink.append(axis)
            continue
        start = None if attr["begin_mask"].i >> axis & 1 else int(b)
        stop = None if attr["end_mask"].i >> axis & 1 else int(e)
        index.append(slice(start, stop, int(s)))
    return np.asarray(x)[tuple(index)]


def _slice(x: Any, begin: Any, size: Any) -> Any:
    ends = [None if s == -1 else int(b) + int(s) for b, s in zip(begin, size, strict=True)]
    return x[tuple(slice(int(b), e) for b, e in zip(begin, ends, strict=True))]


_NUMPY_OPS: dict[str, Callable[..., Any]] = {
    "Identity": lambda node, x: x,
    "Add": lambda node, a, b: np.add(a, b),
    "Sub": lambda node, a, b: np.subtract(a, b),
    "Mul": lambda node, a, b: np.multiply(a, b),
    "RealDiv": lambda node, a, b: np.divide(a, b),
    "Minimum": lambda node, a, b: np.minimum(a, b),
    "Sqrt": lambda node, x: np.sqrt(x),
    "Equal": lambda node, a, b: np.equal(a, b),
    "All": lambda node, x, axis: np.all(x, tuple(np.atleast_1d(axis)), keepdims=node.attr["keep_dims"].b),
    "Cast": lambda node, x: np.asarray(x).astype(_DTYPES[node.attr["DstT"].type]),
    "Reshape": lambda node, x, shape: np.reshape(x, [int(d) for d in shape]),
    "ExpandDims": lambda node, x, axis: np.expand_dims(x, int(axis)),
    "Tile": lambda node, x, reps: np.tile(x, [int(r) for r in reps]),
    "Fill": lambda node, dims, value: np.full([int(d) for d in dims], value),
    "Range": lambda node, start, limit, delta: np.arange(start, limit, delta),
    "Pack": lambda node, *xs: np.stack(xs, axis=node.attr["axis"].i),
    "ConcatV2": lambda node, *xs: np.concatenate(xs[:-1], axis=int(xs[-1])),
    "Slice": lambda node, x, begin, size: _slice(np.asarray(x), begin, size),
    "StridedSlice": _strided_slice,
}


def evaluate_constant(graph: TfGraph, name: str) -> npt.NDArray[Any]:
    """Evaluates node `name`, every input of which must come from constants (Assert and other control
    dependencies are skipped: they only check the values)."""
    memo: dict[str, Any] = {}

    def value(ref: str) -> Any:
        key = _node_name(ref)
        if ref.partition(":")[2] not in ("", "0"):
            raise ModelLoadError(f"{ref}: ops with several outputs are not supported in constant subgraphs")
        if key not in memo:
            node = graph.node(key)
            if node.op == "Const":
                memo[key] = _tensor_value(node.attr["value"].tensor)
            else:
                op = _NUMPY_OPS.get(node.op)
                if op is None:
                    raise ModelLoadError(f"{node.name}: op {node.op} is not supported in constant subgraphs")
                memo[key] = op(node, *(value(i) for i in node.input if not i.startswith("^")))
        return memo[key]

    return np.asarray(value(name))


# --- the convolutional part in torch ---------------------------------------------------------------


def _topological(graph: TfGraph, outputs: Iterable[str], stop: str) -> list[Any]:
    """Nodes needed for `outputs`, inputs first, not looking past `stop` (the network's input)."""
    order: list[Any] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = _node_name(name)
        if name in seen:
            return
        seen.add(name)
        node = graph.node(name)
        if name != stop:
            for ref in _data_inputs(node):
                visit(ref)
        order.append(node)

    for out in outputs:
        visit(out)
    return order


def _data_inputs(node: Any) -> list[str]:
    """The inputs a node computes from; weights and batch-norm parameters are read when folding."""
    if node.op in ("Conv2D", "DepthwiseConv2dNative", "FusedBatchNorm", "BiasAdd"):
        return [node.input[0]]
    return [ref for ref in node.input if not ref.startswith("^")]


class _SameConv(torch.nn.Module):
    """A TF Conv2D / DepthwiseConv2dNative with 'SAME' padding, its batch norm or bias folded in."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias, requires_grad=False)
        self.kernel = weight.shape[2]
        self.stride = stride
        self.groups = groups
        self._shifted: dict[tuple[int, int], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # SAME pads total // 2 before and the rest after, so at stride 2 on an even size one more row
        # (column) after than before, which conv2d's symmetric padding cannot express. Padding both sides
        # by the larger amount and giving the kernel a leading row (column) of zeros reads the same
        # pixels with the same weights, without a padded copy of the input.
        pads: list[int] = []
        shift: list[int] = []
        for size in (x.shape[2], x.shape[3]):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads.append(total - total // 2)
            shift.append(total - total // 2 - total // 2)
        weight: torch.Tensor = self.weight
        if any(shift):
            key = (shift[0], shift[1])
            if key not in self._shifted:
                self._shifted[key] = F.pad(self.weight, [shift[1], 0, shift[0], 0]).contiguous(
                    memory_format=torch.channels_last
                )
            weight = self._shifted[key]
        return F.conv2d(x, weight, self.bias, self.stride, pads, 1, self.groups)


# What Shape reports for the batch size (see ConvNet): not a size a real tensor has, nor TF's -1.
_BATCH = -(2**31) + 1


class ConvNet(torch.nn.Module):
    """The graph from `input_name` (NHWC float) to `outputs`, evaluated in NCHW with folded convolutions.

    `forward` takes an NCHW tensor and returns the outputs in the graph's own layout (reshapes and
    concats see NHWC order), so they equal what TensorFlow computes. The batch size is never read as a
    number (Shape reports it as _BATCH, which Reshape replaces with the input's batch; any other target
    is TensorFlow's), so the module exports with it free.
    """

    def __init__(self, graph: TfGraph, input_name: str, outputs: Sequence[str]) -> None:
        super().__init__()
        self._input = input_name
        self._outputs = list(outputs)
        self.convs = torch.nn.ModuleDict()
        self._steps: list[tuple[str, str, list[str], Any]] = []  # (output name, op, inputs, extra)
        folded: set[str] = set()  # batch norms and bias adds computed by the conv before them
        for node in _topological(graph, self._outputs, input_name):
            name = node.name
            inputs = [_node_name(i) for i in _data_inputs(node)]
            if name == input_name or name in folded:
                continue
            if node.op == "Const":
                self._steps.append((name, "Const", [], graph.const(name)))
            elif node.op in ("Conv2D", "DepthwiseConv2dNative"):
                folded.add(self._fold(graph, node))
            elif node.op == "Relu6":
                # In place when nothing else reads the input (the conv output before its activation).
                self._steps.append((name, node.op, inputs, len(graph.consumers(inputs[0])) == 1))
            elif node.op in ("Identity", "Add", "AddV2", "Shape", "StridedSlice", "Pack", "Reshape"):
                self._steps.append((name, node.op, inputs, node))
            elif node.op == "ConcatV2":
                self._steps.append((name, node.op, inputs, None))
            else:
                raise ModelLoadError(f"{name}: op {node.op} is not supported in the network")

    def _fold(self, graph: TfGraph, node: Any) -> str:
        """Makes the torch conv for `node`, folding a following FusedBatchNorm or BiasAdd into it.
        Returns the name of the last node it covers (its output is the conv's output)."""
        if node.attr["data_format"].s not in (b"", b"NHWC") or node.attr["padding"].s != b"SAME":
            raise ModelLoadError(f"{node.name}: only NHWC convolutions with SAME padding are supported")
        if any(d != 1 for d in node.attr["dilations"].list.i):
            raise ModelLoadError(f"{node.name}: dilated convolutions are not supported")
        kernel = torch.from_numpy(graph.const(node.input[1]))  # HWIO, or HW,C,multiplier for depthwise
        depthwise = node.op == "DepthwiseConv2dNative"
        if depthwise:
            h, w, channels, mult = kernel.shape
            weight = kernel.permute(2, 3, 0, 1).reshape(channels * mult, 1, h, w)
            groups = channels
        else:
            weight = kernel.permute(3, 2, 0, 1)
            groups = 1
        bias = torch.zeros(weight.shape[0])
        last = node.name
        consumers = graph.consumers(node.name)
        if len(consumers) == 1:
            nxt = graph.node(consumers[0])
            if nxt.op == "FusedBatchNorm":
                gamma, beta, mean, var = (torch.from_numpy(graph.const(i)) for i in nxt.input[1:5])
                scale = gamma / torch.sqrt(var + nxt.attr["epsilon"].f)
                weight = weight * scale.reshape(-1, 1, 1, 1)
                bias = beta - mean * scale
                last = nxt.name
            elif nxt.op == "BiasAdd":
                bias = torch.from_numpy(graph.const(nxt.input[1]))
                last = nxt.name
        stride = node.attr["strides"].list.i
        self.convs[node.name.replace("/", "__")] = _SameConv(weight.contiguous(), bias, stride[1], groups)
        self._steps.append((last, "Conv", [_node_name(node.input[0])], node.name.replace("/", "__")))
        return last

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        values: dict[str, Any] = {self._input: x}
        for name, op, inputs, extra in self._steps:
            args = [values[i] for i in inputs]
            values[name] = self._run(op, args, extra)
        return [values[o] for o in self._outputs]

    def _run(self, op: str, args: list[Any], extra: Any) -> Any:
        if op == "Conv":
            return self.convs[extra](args[0])
        if op == "Const":
            return extra
        if op == "Identity":
            return args[0]
        if op == "Relu6":
            return F.relu6(args[0], inplace=extra)
        if op in ("Add", "AddV2"):
            return args[0] + args[1]
        if op == "Shape":  # the NHWC shape TF would report, but for the batch size: a number read here
            # would be a constant in an exported network, so it is _BATCH, which Reshape reads as "the
            # input's batch".
            _, c, h, w = args[0].shape
            return np.array([_BATCH, h, w, c], dtype=np.int32)
        if op == "StridedSlice":
            return _strided_slice(extra, *args)
        if op == "Pack":
            return np.stack([np.asarray(a) for a in args], axis=extra.attr["axis"].i)
        if op == "Reshape":
            x = args[0].permute(0, 2, 3, 1) if args[0].dim() == 4 else args[0]
            target = [int(d) for d in args[1]]
            return x.reshape(*(x.shape[0] if d == _BATCH else d for d in target))
        if op == "ConcatV2":
            return torch.cat(args[:-1], dim=int(args[-1]))
        raise AssertionError(op)
