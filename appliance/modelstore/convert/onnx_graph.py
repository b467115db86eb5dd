"""Build-time only: ONNX graphs written directly from numpy weights with `onnx.helper`, no torch.

`Graph` collects nodes, initializers and the graph's inputs and outputs; `op()` adds one node and returns the name
of its output, so a model reads as nested calls. The layers the converters share are here too: a Linear layer as
MatMul with an initializer [in, out] then Add (the form `quantize_dynamic(op_types_to_quantize=["MatMul"])` turns
into int8), LayerNormalization (opset 17) and the exact (erf) GELU in the node pattern onnxruntime fuses.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: older onnxruntime builds load the graphs too
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
SQRT_2 = math.sqrt(2.0)


class Graph:
    """One ONNX graph being built: `weight()` and `const()` add initializers, `op()` nodes."""

    def __init__(self, name: str):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._consts: dict[tuple, str] = {}

    def input(self, name: str, elem_type: int, shape: list[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, elem_type: int, shape: list[int | str]) -> None:
        """Declare `name` (the `out` of an `op()`) a graph output."""
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=np.float32) -> str:
        """A small constant (scalar or short vector) as an initializer; equal constants share one."""
        array = np.asarray(value, dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight(f"const_{len(self._consts)}", array)
        return self._consts[key]

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        """Add one node; its output is `out` or a generated name, which is returned."""
        name = f"{op_type}_{len(self.nodes)}"
        out = out or name + "_out"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="appliance")
        model.ir_version = IR_VERSION
        return model


def save(model: onnx.ModelProto, path: Path, *, external_data: bool) -> None:
    """Write `model` to `path`; with `external_data` its weights go to `<name>.data` beside it (protobuf's 2 GB
    limit)."""
    onnx.save_model(model, str(path), save_as_external_data=external_data, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def linear(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray, name: str) -> str:
    """x @ weight.T + bias for a weight in torch's layout [out, in]: MatMul with `<name>.weight` [in, out], then Add."""
    y = g.op("MatMul", x, g.weight(f"{name}.weight", np.asarray(weight, np.float32).T))
    return g.op("Add", y, g.weight(f"{name}.bias", np.asarray(bias, np.float32)))


def layer_norm(g: Graph, x: str, weight: np.ndarray, bias: np.ndarray, name: str, eps: float = 1e-5) -> str:
    """LayerNormalization over the last axis."""
    w = g.weight(f"{name}.weight", np.asarray(weight, np.float32))
    b = g.weight(f"{name}.bias", np.asarray(bias, np.float32))
    return g.op("LayerNormalization", x, w, b, axis=-1, epsilon=eps)


def gelu(g: Graph, x: str) -> str:
    """Exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)) as torch's F.gelu, in the node pattern onnxruntime fuses into one
    Gelu."""
    erf = g.op("Erf", g.op("Div", x, g.const(SQRT_2)))
    return g.op("Mul", g.op("Mul", x, g.op("Add", erf, g.const(1.0))), g.const(0.5))
