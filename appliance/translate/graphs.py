"""The ONNX graphs of a translation model: encoder, one decoder step (SSRU or KV-cache transformer), output layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.providers import open_session
from appliance.translate.facts import MarianFacts


@dataclass
class Encoded:
    src_mask: np.ndarray  # [B,S] float32
    cross_k: np.ndarray  # [L,B,H,S,dh]
    cross_v: np.ndarray


@dataclass
class DecoderState:
    """Everything one decoder step needs, batch-major on axis 1 (axis 0 for the mask)."""

    src_mask: np.ndarray
    cross_k: np.ndarray
    cross_v: np.ndarray
    recurrent: tuple[np.ndarray, ...]  # SSRU: (states,); transformer: (past_k, past_v)

    def select(self, index: np.ndarray) -> "DecoderState":
        """Keep / reorder / repeat rows (hypotheses) by index."""
        return DecoderState(self.src_mask[index], self.cross_k[:, index], self.cross_v[:, index],
                            tuple(r[:, index] for r in self.recurrent))


class Graphs:
    def __init__(self, model_dir: Path, facts: MarianFacts, providers, threads: int, profile: bool = False):
        self.facts = facts
        files = facts.files
        self.encoder = open_session(model_dir / files["encoder"], providers, threads, profile=profile)
        self.decoder = open_session(model_dir / files["decoder"], providers, threads, profile=profile)
        self._output = None
        self._output_path = model_dir / files["output"]
        self._providers, self._threads = providers, threads
        self.rows = None
        if files.get("output_rows") and (model_dir / files["output_rows"]).is_file():
            with np.load(model_dir / files["output_rows"]) as npz:
                self.rows = (npz["weight"], npz["scale"].astype(np.float32), npz["bias"].astype(np.float32))

    @property
    def output(self):
        if self._output is None:
            self._output = open_session(self._output_path, self._providers, self._threads)
        return self._output

    def placement(self, name: str) -> list:
        """placement.Placement of each open graph (after the warm-up: this ends the profiling of the warm-up)."""
        from appliance import placement

        sessions = {"encoder": self.encoder, "decoder": self.decoder, "output": self._output}
        return [placement.report(sess, f"{name}/{self.facts.files[k]}") for k, sess in sessions.items() if sess]

    def encode(self, tokens: np.ndarray, lengths: np.ndarray) -> Encoded:
        _out, mask, k, v = self.encoder.run(None, {"tokens": tokens, "lengths": lengths})
        return Encoded(mask, k, v)

    def start(self, enc: Encoded) -> DecoderState:
        f = self.facts
        n = enc.src_mask.shape[0]
        if f.decoder == "ssru":
            recurrent = (np.zeros((f.decoder_layers, n, f.dim), np.float32),)
        else:
            empty = np.zeros((f.decoder_layers, n, f.heads, 0, f.head_dim), np.float32)
            recurrent = (empty, empty)
        return DecoderState(enc.src_mask, enc.cross_k, enc.cross_v, recurrent)

    def step(self, tokens: np.ndarray, step: int, state: DecoderState) -> tuple[np.ndarray, DecoderState]:
        feeds = {"tokens": tokens, "step": np.array([step], np.int64), "cross_k": state.cross_k,
                 "cross_v": state.cross_v, "src_mask": state.src_mask}
        if self.facts.decoder == "ssru":
            feeds["states"] = state.recurrent[0]
            hidden, states = self.decoder.run(None, feeds)
            recurrent = (states,)
        else:
            feeds["past_k"], feeds["past_v"] = state.recurrent
            hidden, k, v = self.decoder.run(None, feeds)
            recurrent = (k, v)
        return hidden, DecoderState(state.src_mask, state.cross_k, state.cross_v, recurrent)

    def output_rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float weights [D, len(ids)] and bias for a subset of the vocabulary (the shortlist)."""
        weight, scale, bias = self.rows
        return np.ascontiguousarray((weight[ids].astype(np.float32) * scale[ids, None]).T), bias[ids]

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return self.output.run(None, {"hidden": hidden})[0]
