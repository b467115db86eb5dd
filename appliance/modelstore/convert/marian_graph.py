"""Marian translation models as ONNX graphs built from numpy weights (no torch): the layout `appliance.translate` runs.

Both Marian importers fill the dataclasses here (`bergamot`: a Marian binary with an SSRU decoder; `marian_hf`:
Hugging Face OPUS-MT with a transformer decoder) and `write_graphs` writes three graphs:

- `encoder.onnx`: tokens [batch, src_len] int64, lengths [batch] int64 -> encoder_out [batch, src_len, D],
  src_mask [batch, src_len] float32 (1 = token, 0 = padding) and every decoder layer's cross-attention keys/values
  cross_k, cross_v [L, batch, H, src_len, dh] (computed once per sentence);
- `decoder.onnx`: one decoder step: tokens [n] (the previous outputs), step [1], the recurrent state, cross_k,
  cross_v [L, n, H, src_len, dh] and src_mask [n, src_len] -> hidden [n, D] and the next state. SSRU: states
  [L, n, D] -> new_states; transformer: past_k, past_v [L, n, H, past, dh] -> present_k, present_v (one step longer);
- `output.onnx`: hidden [n, D] -> logits [n, V].

Each linear layer is a MatMul whose weight [in, out] is an initializer, and the token and position tables are Gathers
from initializers, so onnxruntime's dynamic quantization (`quantize_file`) turns exactly those into int8. Both models
are post-norm ("dan"): x = LN(x + sublayer(x)). Marian references: src/models/transformer.h, src/rnn/cells.h (SSRU).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from appliance.modelstore.manifest import ModelError

OPSET = 17
IR_VERSION = 8  # as torch's exporter wrote; onnx's default (its newest) is more than older onnxruntime releases read
ACTIVATIONS = ("relu", "swish", "silu", "gelu", "gelu_new")
MASKED = -1e9  # attention bias of a padding position


# ----------------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class Linear:
    w: np.ndarray  # [in, out]: y = x @ w + b
    b: np.ndarray | None = None


@dataclass(frozen=True)
class Norm:
    g: np.ndarray
    b: np.ndarray
    eps: float


@dataclass(frozen=True)
class Attention:
    q: Linear
    k: Linear
    v: Linear
    o: Linear


@dataclass(frozen=True)
class FFN:
    w1: Linear
    w2: Linear
    act: str  # one of ACTIVATIONS


@dataclass(frozen=True)
class EncoderLayer:
    att: Attention
    att_norm: Norm
    ffn: FFN
    ffn_norm: Norm


@dataclass(frozen=True)
class SSRULayer:
    """Marian SSRU: f = sigmoid(x Wf + bf); c = f c_prev + (1 - f) x W; out = relu(c); then cross-attention, FFN."""

    w: np.ndarray
    forget: Linear
    rnn_norm: Norm
    att: Attention
    att_norm: Norm
    ffn: FFN
    ffn_norm: Norm


@dataclass(frozen=True)
class TransformerLayer:
    self_att: Attention
    self_norm: Norm
    att: Attention
    att_norm: Norm
    ffn: FFN
    ffn_norm: Norm


@dataclass(frozen=True)
class MarianWeights:
    """A whole model. SSRU decoders take a zero embedding at step 0 (Marian's start), as Bergamot models expect."""

    heads: int
    emb_scale: float  # token embeddings are multiplied by it before the positions are added
    enc_emb: np.ndarray  # [V, D]
    enc_pos: np.ndarray  # [positions, D]
    encoder: Sequence[EncoderLayer]
    dec_emb: np.ndarray
    dec_pos: np.ndarray
    decoder: Sequence[SSRULayer] | Sequence[TransformerLayer]
    output: Linear  # [D, V] and the logit bias

    @property
    def dim(self) -> int:
        return int(self.enc_emb.shape[1])

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def ssru(self) -> bool:
        return isinstance(self.decoder[0], SSRULayer)


def sinusoid_table(positions: int, dim: int, *, marian: bool) -> np.ndarray:
    """Sinusoidal positions: sin in the first half, cos in the second.

    Marian: frequency_i = exp(-i * ln(10000) / (dim/2 - 1)); Hugging Face Marian: 1 / 10000^(2i/dim).
    """
    half = dim // 2
    i = np.arange(half, dtype=np.float64)
    freq = np.exp(-i * math.log(10000.0) / (half - 1)) if marian else 1.0 / np.power(10000.0, 2 * i / dim)
    angles = np.arange(positions, dtype=np.float64)[:, None] * freq[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------- graph builder
# onnx is imported where it is used: `build.build_key` imports every converter to hash its source, also on a machine
# that has no build tools and only checks that its models are current.


def _value_info(name: str, dtype, shape: list):
    from onnx import helper

    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)


class Graph:
    """An ONNX graph being built: declared inputs and outputs, initializers, and nodes with generated value names."""

    def __init__(self, name: str):
        self.name = name
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.outputs: list = []
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def input(self, name: str, dtype, shape: list) -> str:
        self.inputs.append(_value_info(name, dtype, shape))
        return name

    def output(self, value: str, name: str, dtype, shape: list) -> None:
        self.op("Identity", value, out=name)
        self.outputs.append(_value_info(name, dtype, shape))

    def weight(self, array: np.ndarray) -> str:
        """A float32 initializer (a MatMul weight, a Gather table, a norm or bias vector)."""
        return self._initializer(np.asarray(array, np.float32), "w")

    def const(self, value, dtype=np.int64) -> str:
        """A small constant (shape, index, scalar factor) as an initializer."""
        return self._initializer(np.asarray(value, dtype), "c")

    def _initializer(self, array: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        name = self._fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d scalars
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        from onnx import helper

        node = self._fresh(op_type)
        value = out or node
        self.nodes.append(helper.make_node(op_type, list(inputs), [value], name=node, **attrs))
        return value

    def cast_float(self, x: str) -> str:
        from onnx import TensorProto

        return self.op("Cast", x, to=TensorProto.FLOAT)

    def model(self):
        from onnx import helper

        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="appliance")
        model.ir_version = IR_VERSION
        return model


# ----------------------------------------------------------------------------------------- layers


def linear(g: Graph, x: str, lin: Linear) -> str:
    y = g.op("MatMul", x, g.weight(lin.w))
    return g.op("Add", y, g.weight(np.asarray(lin.b).reshape(-1))) if lin.b is not None else y


def layer_norm(g: Graph, x: str, norm: Norm) -> str:
    return g.op("LayerNormalization", x, g.weight(np.asarray(norm.g).reshape(-1)),
                g.weight(np.asarray(norm.b).reshape(-1)), axis=-1, epsilon=norm.eps)


def activation(g: Graph, x: str, name: str) -> str:
    if name == "relu":
        return g.op("Relu", x)
    if name in ("swish", "silu"):
        return g.op("Mul", x, g.op("Sigmoid", x))
    if name == "gelu":  # x/2 (1 + erf(x / sqrt 2))
        erf = g.op("Erf", g.op("Div", x, g.const(math.sqrt(2.0), np.float32)))
        return g.op("Mul", g.op("Mul", x, g.const(0.5, np.float32)), g.op("Add", erf, g.const(1.0, np.float32)))
    if name == "gelu_new":  # x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = g.op("Mul", g.op("Pow", x, g.const(3.0, np.float32)), g.const(0.044715, np.float32))
        inner = g.op("Mul", g.op("Add", x, cube), g.const(math.sqrt(2.0 / math.pi), np.float32))
        return g.op("Mul", g.op("Mul", x, g.const(0.5, np.float32)),
                    g.op("Add", g.op("Tanh", inner), g.const(1.0, np.float32)))
    raise ModelError(f"activation '{name}' is not supported; expected one of {', '.join(ACTIVATIONS)}")


def ffn(g: Graph, x: str, f: FFN) -> str:
    return linear(g, activation(g, linear(g, x, f.w1), f.act), f.w2)


def split_heads(g: Graph, x: str, heads: int, head_dim: int) -> str:
    """[N, T, D] -> [N, H, T, dh]."""
    return g.op("Transpose", g.op("Reshape", x, g.const([0, -1, heads, head_dim])), perm=[0, 2, 1, 3])


def project_kv(g: Graph, att: Attention, x: str, heads: int, head_dim: int) -> tuple[str, str]:
    return (split_heads(g, linear(g, x, att.k), heads, head_dim),
            split_heads(g, linear(g, x, att.v), heads, head_dim))


def attention(g: Graph, att: Attention, x: str, k: str, v: str, bias: str | None, heads: int, head_dim: int) -> str:
    """Queries from x [N, Tq, D] over keys/values [N, H, Tk, dh]; bias broadcasts to [N, H, Tq, Tk]."""
    q = split_heads(g, linear(g, x, att.q), heads, head_dim)
    scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])),
                  g.const(1.0 / math.sqrt(head_dim), np.float32))
    if bias is not None:
        scores = g.op("Add", scores, bias)
    out = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)  # [N, H, Tq, dh]
    merged = g.op("Reshape", g.op("Transpose", out, perm=[0, 2, 1, 3]), g.const([0, -1, heads * head_dim]))
    return linear(g, merged, att.o)


def padding_bias(g: Graph, mask: str) -> str:
    """src_mask [N, S] (1 = token) -> additive attention bias [N, 1, 1, S] (MASKED at padding)."""
    masked = g.op("Mul", g.op("Sub", g.const(1.0, np.float32), mask), g.const(MASKED, np.float32))
    return g.op("Unsqueeze", masked, g.const([1, 2]))


def stack(g: Graph, values: list[str]) -> str:
    return g.op("Concat", *(g.op("Unsqueeze", v, g.const([0])) for v in values), axis=0)


def layer(g: Graph, x: str, i: int) -> str:
    """Layer i of a stacked [L, ...] tensor."""
    return g.op("Gather", x, g.const(i), axis=0)


def embed(g: Graph, table: np.ndarray, tokens: str, scale: str, pos: np.ndarray, steps: str) -> str:
    """table[tokens] * scale + pos[steps]."""
    tok = g.op("Mul", g.op("Gather", g.weight(table), tokens), scale)
    return g.op("Add", tok, g.op("Gather", g.weight(pos), steps))


# ----------------------------------------------------------------------------------------- graphs


def encoder_graph(w: MarianWeights) -> Graph:
    g = Graph("encoder")
    tokens = g.input("tokens", np.int64, ["batch", "src_len"])
    lengths = g.input("lengths", np.int64, ["batch"])
    steps = g.op("Range", g.const(0), g.op("Gather", g.op("Shape", tokens), g.const(1)), g.const(1))
    x = embed(g, w.enc_emb, tokens, g.const(w.emb_scale, np.float32), w.enc_pos, steps)
    mask = g.cast_float(g.op("Less", g.op("Unsqueeze", steps, g.const([0])), g.op("Unsqueeze", lengths, g.const([1]))))
    bias = padding_bias(g, mask)
    for enc in w.encoder:
        k, v = project_kv(g, enc.att, x, w.heads, w.head_dim)
        x = layer_norm(g, g.op("Add", x, attention(g, enc.att, x, k, v, bias, w.heads, w.head_dim)), enc.att_norm)
        x = layer_norm(g, g.op("Add", x, ffn(g, x, enc.ffn)), enc.ffn_norm)
    ks, vs = zip(*(project_kv(g, dec.att, x, w.heads, w.head_dim) for dec in w.decoder))
    cross = [len(w.decoder), "batch", w.heads, "src_len", w.head_dim]
    g.output(x, "encoder_out", np.float32, ["batch", "src_len", w.dim])
    g.output(mask, "src_mask", np.float32, ["batch", "src_len"])
    g.output(stack(g, list(ks)), "cross_k", np.float32, cross)
    g.output(stack(g, list(vs)), "cross_v", np.float32, cross)
    return g


def _step_inputs(g: Graph, w: MarianWeights, recurrent: dict[str, list]) -> list[str]:
    """tokens, step, the recurrent state inputs (name -> shape), cross_k, cross_v, src_mask, in this order."""
    cross = [len(w.decoder), "n", w.heads, "src_len", w.head_dim]
    specs = [("tokens", np.int64, ["n"]), ("step", np.int64, [1]),
             *((name, np.float32, shape) for name, shape in recurrent.items()),
             ("cross_k", np.float32, cross), ("cross_v", np.float32, cross), ("src_mask", np.float32, ["n", "src_len"])]
    return [g.input(*spec) for spec in specs]


def ssru_decoder_graph(w: MarianWeights) -> Graph:
    """One SSRU step; at step 0 the token embedding is zero (Marian's start), the position is still added."""
    g = Graph("decoder")
    tokens, step, states, cross_k, cross_v, src_mask = _step_inputs(g, w, {"states": [len(w.decoder), "n", w.dim]})
    started = g.cast_float(g.op("Greater", step, g.const([0])))
    scale = g.op("Mul", g.const(w.emb_scale, np.float32), started)
    x = g.op("Unsqueeze", embed(g, w.dec_emb, tokens, scale, w.dec_pos, step), g.const([1]))  # [n, 1, D]
    bias = padding_bias(g, src_mask)
    new_states = []
    for i, dec in enumerate(w.decoder):
        c_prev = g.op("Unsqueeze", layer(g, states, i), g.const([1]))
        f = g.op("Sigmoid", linear(g, x, dec.forget))
        c = g.op("Add", g.op("Mul", f, c_prev),
                 g.op("Mul", g.op("Sub", g.const(1.0, np.float32), f), linear(g, x, Linear(dec.w))))
        new_states.append(g.op("Squeeze", c, g.const([1])))
        x = layer_norm(g, g.op("Add", x, g.op("Relu", c)), dec.rnn_norm)
        att = attention(g, dec.att, x, layer(g, cross_k, i), layer(g, cross_v, i), bias, w.heads, w.head_dim)
        x = layer_norm(g, g.op("Add", x, att), dec.att_norm)
        x = layer_norm(g, g.op("Add", x, ffn(g, x, dec.ffn)), dec.ffn_norm)
    g.output(g.op("Squeeze", x, g.const([1])), "hidden", np.float32, ["n", w.dim])
    g.output(stack(g, new_states), "new_states", np.float32, [len(w.decoder), "n", w.dim])
    return g


def transformer_decoder_graph(w: MarianWeights) -> Graph:
    """One step with a self-attention key/value cache: present = past + this step's keys/values."""
    g = Graph("decoder")
    past = [len(w.decoder), "n", w.heads, "past", w.head_dim]
    tokens, step, past_k, past_v, cross_k, cross_v, src_mask = _step_inputs(g, w, {"past_k": past, "past_v": past})
    x = g.op("Unsqueeze", embed(g, w.dec_emb, tokens, g.const(w.emb_scale, np.float32), w.dec_pos, step),
             g.const([1]))
    bias = padding_bias(g, src_mask)
    ks, vs = [], []
    for i, dec in enumerate(w.decoder):
        k, v = project_kv(g, dec.self_att, x, w.heads, w.head_dim)
        ks.append(g.op("Concat", layer(g, past_k, i), k, axis=2))
        vs.append(g.op("Concat", layer(g, past_v, i), v, axis=2))
        x = layer_norm(g, g.op("Add", x, attention(g, dec.self_att, x, ks[-1], vs[-1], None, w.heads, w.head_dim)),
                       dec.self_norm)
        att = attention(g, dec.att, x, layer(g, cross_k, i), layer(g, cross_v, i), bias, w.heads, w.head_dim)
        x = layer_norm(g, g.op("Add", x, att), dec.att_norm)
        x = layer_norm(g, g.op("Add", x, ffn(g, x, dec.ffn)), dec.ffn_norm)
    present = [len(w.decoder), "n", w.heads, "total", w.head_dim]
    g.output(g.op("Squeeze", x, g.const([1])), "hidden", np.float32, ["n", w.dim])
    g.output(stack(g, ks), "present_k", np.float32, present)
    g.output(stack(g, vs), "present_v", np.float32, present)
    return g


def output_graph(w: MarianWeights) -> Graph:
    g = Graph("output")
    hidden = g.input("hidden", np.float32, ["n", w.dim])
    vocab = int(w.output.w.shape[1])
    g.output(linear(g, hidden, w.output), "logits", np.float32, ["n", vocab])
    return g


# ----------------------------------------------------------------------------------------- files


def quantize_file(path: Path, *, per_channel: bool) -> None:
    """int8 dynamic quantization in place: MatMul weights (per output channel or per tensor), embedding Gathers."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer warns on the root logger about optional shape pre-processing
    try:
        quantize_dynamic(str(path), str(tmp), per_channel=per_channel, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather"])
    finally:
        root.setLevel(level)
    tmp.replace(path)


def write_graphs(w: MarianWeights, out: Path, *, quantize: bool, per_channel: bool,
                 progress: Callable[[str], None]) -> None:
    """encoder.onnx, decoder.onnx and output.onnx into `out`, checked, and quantized when asked."""
    import onnx

    decoder = ssru_decoder_graph if w.ssru else transformer_decoder_graph
    for name, build in (("encoder.onnx", encoder_graph), ("decoder.onnx", decoder), ("output.onnx", output_graph)):
        progress(f"writing {name}")
        onnx.save(build(w).model(), str(out / name))
        if quantize:
            progress(f"quantizing {name} (int8 dynamic, per {'channel' if per_channel else 'tensor'})")
            quantize_file(out / name, per_channel=per_channel)
        onnx.checker.check_model(str(out / name))
