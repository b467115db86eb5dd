"""Greedy and beam search over a batch of sentences, driven by the decoder graphs and a scorer."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from appliance.translate.graphs import DecoderState, Graphs

NEG_INF = np.float32(-np.inf)


class Scorer(Protocol):
    def __call__(self, hidden: np.ndarray, owners: np.ndarray) -> np.ndarray: ...  # [R, C] logits
    def ids(self, columns: np.ndarray, owners: np.ndarray) -> np.ndarray: ...  # columns -> vocabulary ids


class ShortlistScorer:
    """Logits over each sentence's own shortlist (columns padded to the longest list with -inf).

    One mat-vec per hypothesis against its sentence's rows: cheaper than scoring the union of a batch's lists.
    """

    def __init__(self, graphs: Graphs, allowed: list[np.ndarray], suppress: tuple[int, ...]):
        width = max(len(ids) for ids in allowed)
        dim = graphs.facts.dim
        self.columns = np.zeros((len(allowed), width), np.int64)
        self.weight = np.zeros((len(allowed), dim, width), np.float32)
        self.bias = np.full((len(allowed), width), NEG_INF, np.float32)
        for i, ids in enumerate(allowed):
            self.columns[i, : len(ids)] = ids
            self.weight[i, :, : len(ids)], self.bias[i, : len(ids)] = graphs.output_rows(ids)
            self.bias[i, : len(ids)][np.isin(ids, np.asarray(suppress, np.int64))] = NEG_INF

    def __call__(self, hidden: np.ndarray, owners: np.ndarray) -> np.ndarray:
        out = np.empty((len(owners), self.bias.shape[1]), np.float32)
        for row, owner in enumerate(owners):
            np.matmul(hidden[row], self.weight[owner], out=out[row])
        return out + self.bias[owners]

    def ids(self, columns: np.ndarray, owners: np.ndarray) -> np.ndarray:
        return self.columns[owners, columns]


class FullScorer:
    """Logits over the whole vocabulary from output.onnx."""

    def __init__(self, graphs: Graphs, vocab_size: int, suppress: tuple[int, ...]):
        self.graphs = graphs
        self.bias = np.zeros(vocab_size, np.float32)
        self.bias[list(suppress)] = NEG_INF

    def __call__(self, hidden: np.ndarray, owners: np.ndarray) -> np.ndarray:
        return self.graphs.logits(hidden) + self.bias

    def ids(self, columns: np.ndarray, owners: np.ndarray) -> np.ndarray:
        return columns


def greedy(graphs: Graphs, state: DecoderState, scorer: Scorer, max_len: list[int], start_id: int,
           eos_id: int) -> list[list[int]]:
    n = len(max_len)
    active = np.arange(n)
    tokens = np.full(n, start_id, np.int64)
    outs: list[list[int]] = [[] for _ in range(n)]
    for t in range(max(max_len)):
        hidden, state = graphs.step(tokens, t, state)
        ids = scorer.ids(scorer(hidden, active).argmax(-1), active)
        keep = []
        for row, (s, tok) in enumerate(zip(active, ids)):
            if tok == eos_id:
                continue
            outs[s].append(int(tok))
            if len(outs[s]) < max_len[s]:
                keep.append(row)
        if not keep:
            break
        if len(keep) < len(active):
            keep_a = np.asarray(keep)
            state, active, tokens = state.select(keep_a), active[keep_a], ids[keep_a].astype(np.int64)
        else:
            tokens = ids.astype(np.int64)
    return outs


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))


def beam(graphs: Graphs, state: DecoderState, scorer: Scorer, max_len: list[int], start_id: int, eos_id: int,
         size: int, normalize: float = 1.0) -> list[list[int]]:
    """Beam search; finished hypotheses are ranked by log-probability / length**normalize (EOS counted)."""
    return [hyps[0][1] if hyps else [] for hyps in beam_nbest(graphs, state, scorer, max_len, start_id, eos_id, size,
                                                                normalize)]


def beam_nbest(graphs: Graphs, state: DecoderState, scorer: Scorer, max_len: list[int], start_id: int, eos_id: int,
               size: int, normalize: float = 1.0) -> list[list[tuple[float, list[int]]]]:
    """Beam search keeping every finished hypothesis: per sentence, (normalised score, ids) best first."""
    n = len(max_len)
    owners = np.arange(n)  # sentence of each alive row
    seqs: list[list[int]] = [[] for _ in range(n)]
    scores = np.zeros(n, np.float32)
    tokens = np.full(n, start_id, np.int64)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    done = np.zeros(n, bool)
    for t in range(max(max_len)):
        hidden, state = graphs.step(tokens, t, state)
        logp = _log_softmax(scorer(hidden, owners))
        rows, new_seqs, new_scores, new_tokens, new_owners = [], [], [], [], []
        for s in range(n):
            if done[s]:
                continue
            mine = np.flatnonzero(owners == s)
            total = (scores[mine, None] + logp[mine]).reshape(-1)
            width = logp.shape[1]
            top = np.argpartition(-total, min(2 * size, total.size - 1))[: 2 * size]
            top = top[np.argsort(-total[top], kind="stable")]
            alive = 0
            for flat in top:
                if not np.isfinite(total[flat]):
                    break
                row, col = mine[flat // width], flat % width
                tok = int(scorer.ids(np.array([col]), np.array([s]))[0])
                seq = seqs[row] + [tok]
                if tok == eos_id or len(seq) >= max_len[s]:
                    final = seq[:-1] if tok == eos_id else seq
                    finished[s].append((float(total[flat]) / (len(seq) ** normalize), final))
                    continue
                rows.append(row)
                new_seqs.append(seq)
                new_scores.append(total[flat])
                new_tokens.append(tok)
                new_owners.append(s)
                alive += 1
                if alive == size:
                    break
            if len(finished[s]) >= size or alive == 0:
                done[s] = True
                keep = [i for i, o in enumerate(new_owners) if o != s]
                rows, new_seqs, new_scores, new_tokens, new_owners = (
                    [x[i] for i in keep] for x in (rows, new_seqs, new_scores, new_tokens, new_owners))
        if not rows:
            break
        index = np.asarray(rows)
        state = state.select(index)
        seqs, scores = new_seqs, np.asarray(new_scores, np.float32)
        tokens, owners = np.asarray(new_tokens, np.int64), np.asarray(new_owners)
    for row, s in enumerate(owners):  # ran out of length with hypotheses still alive
        if not finished[s]:
            finished[s].append((float(scores[row]) / (len(seqs[row]) ** normalize or 1), seqs[row]))
    return [sorted(f, key=lambda x: -x[0]) for f in finished]
