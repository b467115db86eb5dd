"""Whisper on onnxruntime: language identification and transcription / translation, greedy or small beam.

Runs the store's layout (see appliance/modelstore/convert/whisper_onnx.py): `encoder.onnx` turns the log-mel of
the audio we have into the decoder's cross-attention keys/values once; `decoder.onnx` then takes one token per
step with its self-attention cache. No timestamps: the prompt ends in <|notimestamps|> and timestamp tokens are
suppressed.

Encoder input length: the audio's own length plus 1 s of silence (`pad_input_seconds` in whisper.json; at
least `min_input_seconds`), not Whisper's 30 s window: 3 s of audio costs ~1/10 of the encoder time. With little
trailing silence Whisper sometimes repeats a finished sentence instead of ending it, so a text that starts over
is cut (`ends_in_loop`). Measured on 15 short English clips (greedy, int8, WER %):
    whisper-base:    +1 s 7.6 | own length 1.4 | own length, no loop cut 73.8 | 30 s window 13.1 | ctranslate2 5.5
    whisper-tiny.en: +1 s 6.2 | own length 15.2 | 10 s minimum 5.5 | 30 s window 8.3 | ctranslate2 10.3
(+1 s on base loses only "counting" written as "12345678910"; own length drops real words on tiny.en.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from appliance.asr import features
from appliance.asr.tokenizer import WhisperTokenizer
from appliance.guards import compression_ratio
from appliance.modelstore.convert.whisper_layout import layer_names
from appliance.modelstore.manifest import ModelError

log = logging.getLogger(__name__)

SAMPLE_RATE = features.SAMPLE_RATE
CHUNK_SECONDS = 30.0
MAX_NEW_TOKENS = 224  # Whisper's own sample_len (half the text context)
MAX_TOKENS_PER_SECOND = 25  # a generous ceiling on speech (CJK included): stops runaway repetition early
TASKS = ("transcribe", "translate")
PAD_SECONDS = 1.0  # silence after the audio in the encoder input, when whisper.json does not say
# A text that starts over (the same >= LOOP_MIN_TOKENS tokens twice in a row at the end) is a decoding loop: Whisper
# on audio shorter than its 30 s window sometimes repeats the utterance instead of ending it. The repeat is dropped.
LOOP_MIN_TOKENS = 4
MAX_PROMPT_TOKENS = 223  # previous-text prompt: Whisper's own bound (half the text context, minus <|startofprev|>)


def ends_in_loop(tokens: list[int], min_tokens: int = LOOP_MIN_TOKENS) -> int:
    """Length k of a block repeated at the end (tokens[-2k:-k] == tokens[-k:], k >= min_tokens), else 0."""
    for k in range(min_tokens, len(tokens) // 2 + 1):
        if tokens[-k:] == tokens[-2 * k:-k]:
            return k
    return 0


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    tokens: tuple[int, ...]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    language_prob: float | None = None  # set when the language was detected
    task: str = "transcribe"
    duration_s: float = 0.0


class Aborted(RuntimeError):
    """A decode stopped by `WhisperModel.abort()` from another thread (its result is not wanted any more)."""


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class WhisperModel:
    """Load with `WhisperModel.load(model_dir)`; thread-compatible, not thread-safe (one caller at a time)."""

    def __init__(self, folder: Path, encoder, decoder, facts: dict):
        self.folder = Path(folder)
        self.encoder = encoder
        self.decoder = decoder
        self.facts = facts
        dims = facts["dims"]
        self.n_mels = int(facts["n_mels"])
        self.n_layers = int(dims["n_text_layer"])
        self.n_heads = int(dims["n_text_head"])
        self.head_dim = int(dims["n_text_state"]) // self.n_heads
        self.n_vocab = int(dims["n_vocab"])
        self.max_frames = 2 * int(dims["n_audio_ctx"])
        self.n_text_ctx = int(dims["n_text_ctx"])
        self.multilingual = bool(facts["is_multilingual"])
        self.tokenizer = WhisperTokenizer(self.folder / "tokenizer.json", facts["special"], facts["languages"], self.multilingual)
        self.languages: list[str] = list(facts["languages"]) if self.multilingual else ["en"]
        self.min_frames = int(round(float(facts.get("min_input_seconds", 0.0)) * SAMPLE_RATE / features.HOP))
        self.pad_frames = int(round(float(facts.get("pad_input_seconds", PAD_SECONDS)) * SAMPLE_RATE / features.HOP))
        self.providers: list[str] = list(encoder.get_providers())
        self.placement: list = []  # placement.Placement of the encoder and the decoder, made by load()
        self.cut_loops = True
        self._cross_names = layer_names("cross", self.n_layers)  # the encoder's outputs: the decoder's inputs
        self._self_names = layer_names("self", self.n_layers)  # the cache's
        self._encoded: tuple[int, np.ndarray, dict] | None = None  # (frames, audio, cross) of the last encoding
        self._encoded_lock = threading.Lock()
        self._run_options = None  # onnxruntime RunOptions of the abortable block in progress (see abortable())
        self._abort_lock = threading.Lock()
        s = self.tokenizer.specials
        self._suppress = np.zeros(self.n_vocab, dtype=bool)
        self._suppress[[i for i in facts["suppress_tokens"] if 0 <= i < self.n_vocab]] = True
        self._suppress[s.eot + 1:] = True  # every special and timestamp token; only <|endoftext|> may end the text
        self._begin = np.zeros(self.n_vocab, dtype=bool)
        self._begin[[i for i in facts["begin_suppress_tokens"] if 0 <= i < self.n_vocab]] = True

    # ---- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: str | Path, providers: Sequence[str] = ("cpu",), threads: int = 0,
             profile: bool | None = None) -> "WhisperModel":
        """`profile`: profile the warm-up for the placement report (default: when an accelerator runs the model)."""
        from appliance import placement
        from appliance.providers import accelerated, open_session

        profile = accelerated(providers) if profile is None else profile
        folder = Path(model_dir)
        facts_path = folder / "whisper.json"
        if not facts_path.is_file():
            raise FileNotFoundError(f"{folder} is not a built Whisper model: missing whisper.json "
                                    "(run `appliance models build` or `appliance models import whisper-...`)")
        facts = json.loads(facts_path.read_text(encoding="utf-8"))
        model = cls(folder, open_session(folder / "encoder.onnx", providers, threads, profile=profile),
                    open_session(folder / "decoder.onnx", providers, threads, profile=profile), facts)
        model._check_layout()
        for _ in range(2 if profile else 1):  # the profile's last run: compiled for its shapes already
            model.forget_encoding()
            model._warm_up()
        model.placement = [placement.report(model.encoder, f"{folder.name}/encoder.onnx"),
                           placement.report(model.decoder, f"{folder.name}/decoder.onnx")]
        log.info("loaded %s (%s) on %s", folder.name, "multilingual" if model.multilingual else "English-only",
                 model.providers[0])
        return model

    def _check_layout(self) -> None:
        """The graphs have the store's per-layer layout (models built before it had stacked cache tensors)."""
        inputs = {i.name for i in self.decoder.get_inputs()}
        outputs = {o.name for o in self.encoder.get_outputs()}
        wanted = {"tokens", "logit_at", *self._self_names, *self._cross_names}
        if not wanted <= inputs or outputs != set(self._cross_names):
            raise ModelError(f"{self.folder} was built by an older converter (decoder inputs {sorted(inputs)[:6]}...): "
                             f"rebuild it with `appliance models build` (an imported model: import it again)")

    def _warm_up(self) -> None:
        cross = self._encode(np.zeros(SAMPLE_RATE, dtype=np.float32))
        self._step(np.array([[self.tokenizer.specials.sot]], dtype=np.int64), self._empty_cache(1), cross)

    # ---- graph calls -----------------------------------------------------------------------------------------
    def frames_for(self, samples: int, pad_seconds: float | None = None) -> int:
        """Encoder input frames for `samples` of audio: its own length + pad_frames (or `pad_seconds`) of silence,
        at least min_frames, even, at most 30 s."""
        pad = self.pad_frames if pad_seconds is None else int(round(pad_seconds * SAMPLE_RATE / features.HOP))
        frames = max(features.n_frames(samples) + pad, self.min_frames, 2)
        return min(frames + frames % 2, self.max_frames)

    def _encode(self, audio: np.ndarray, pad_seconds: float | None = None):
        """The decoder's cross-attention keys/values for `audio`. The last encoding is kept: the pipeline detects
        an utterance's language and transcribes it from the same audio, and that costs one encoder run, not two."""
        frames = self.frames_for(len(audio), pad_seconds)
        with self._encoded_lock:
            last = self._encoded
            if last is not None and last[0] == frames and np.array_equal(last[1], audio):
                return last[2]
        mel = features.log_mel(audio, self.n_mels, frames)
        cross = dict(zip(self._cross_names, self.encoder.run(self._cross_names, {"mel": mel[None]}, self._run_options)))
        with self._encoded_lock:
            self._encoded = (frames, np.array(audio, copy=True), cross)
        return cross

    def forget_encoding(self) -> None:
        """Drop the kept last encoding: the next call encodes again (timing the encoder, not the reuse)."""
        with self._encoded_lock:
            self._encoded = None

    def _empty_cache(self, batch: int) -> list[np.ndarray]:
        """The self-attention cache: keys of each layer, then values, [batch, heads, past, head_dim] each."""
        return [np.zeros((batch, self.n_heads, 0, self.head_dim), np.float32)] * (2 * self.n_layers)

    def _step(self, tokens: np.ndarray, cache: list[np.ndarray], cross: dict, logit_at: Sequence[int] = (-1,)):
        """-> (logits [batch, len(logit_at), vocab] at those positions of `tokens` (negative: from the end), the
        cache with `tokens` added)."""
        at = np.array([i % tokens.shape[1] for i in logit_at], dtype=np.int64)
        feed = {"tokens": tokens, "logit_at": at, **dict(zip(self._self_names, cache)), **cross}
        logits, *cache = self.decoder.run(None, feed, self._run_options)
        return logits, cache

    # ---- aborting a decode from another thread ----------------------------------------------------------------
    @contextlib.contextmanager
    def abortable(self):
        """Model calls inside this block may be stopped by `abort()` from another thread: the call in progress
        (encoder or decoder run) stops between two graph nodes and the block raises `Aborted`. For work that
        is only worth finishing while nothing more urgent is waiting (a partial when speech has just paused)."""
        import onnxruntime as ort

        options = ort.RunOptions()
        with self._abort_lock:
            self._run_options = options
        try:
            yield
        except Exception as exc:
            if options.terminate and not isinstance(exc, Aborted):
                raise Aborted("decode aborted") from exc
            raise
        finally:  # (an abort after the block's last graph run changes nothing: its result stands)
            with self._abort_lock:
                self._run_options = None

    def abort(self) -> bool:
        """Stop the abortable block in progress, if any (thread-safe); True when there was one."""
        with self._abort_lock:
            options = self._run_options
            if options is None:
                return False
            options.terminate = True
            return True

    # ---- public API ------------------------------------------------------------------------------------------
    def detect_language(self, audio: np.ndarray, pad_seconds: float | None = None) -> list[tuple[str, float]]:
        """[(code, probability)] for every language the model knows, most likely first. `pad_seconds` as for
        `transcribe`: the same audio and padding as a following transcription share one encoder run."""
        audio = self._check_audio(audio)
        return self._detect(self._encode(audio[: int(CHUNK_SECONDS * SAMPLE_RATE)], pad_seconds))

    def _detect(self, cross) -> list[tuple[str, float]]:
        if not self.multilingual:
            return [("en", 1.0)]
        logits, _ = self._step(np.array([[self.tokenizer.specials.sot]], dtype=np.int64), self._empty_cache(1), cross)
        codes = list(self.tokenizer.languages)
        ids = np.array([self.tokenizer.languages[c] for c in codes])
        lang = logits[0, -1, ids].astype(np.float64)
        probs = np.exp(lang - lang.max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        return [(codes[i], float(probs[i])) for i in order]

    def transcribe(self, audio: np.ndarray, language: str | None = None, task: str = "transcribe", beam_size: int = 1,
                   max_new_tokens: int | None = None, prompt: str | None = None,
                   pad_seconds: float | None = None, prefix: str | None = None) -> Transcription:
        """Text of 16 kHz mono float32 `audio`. `language=None` detects it (per 30 s window); `task="translate"`
        gives English (multilingual models only). Audio longer than 30 s is decoded in consecutive 30 s windows,
        each conditioned on the text of the one before.

        `prompt`: text said just before (or words likely to be said, such as a glossary's terms), given to the
        decoder as Whisper's previous-text context (<|startofprev|>, last MAX_PROMPT_TOKENS tokens).
        `pad_seconds`: silence after the audio in the encoder input (default: the model's pad_input_seconds).
        `prefix`: the text of the audio's beginning, already known (left audio context): forced as the start of the
        output, and the result is only what follows it (an empty text when Whisper hears nothing more). First
        window only."""
        audio = self._check_audio(audio)
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: use 'transcribe' or 'translate'")
        if not self.multilingual:
            if language not in (None, "en"):
                raise ValueError(f"{self.folder.name} is English-only: language must be 'en' or None, not {language!r}")
            if task == "translate":
                raise ValueError(f"{self.folder.name} is English-only: it cannot translate; use a multilingual model")
        elif language is not None and language not in self.tokenizer.languages:
            raise ValueError(f"unknown language {language!r}: use a Whisper language code such as 'en', 'es', 'pt'")
        if beam_size < 1:
            raise ValueError("beam_size must be at least 1")
        step = int(CHUNK_SECONDS * SAMPLE_RATE)
        parts: list[Transcription] = []
        for start in range(0, max(len(audio), 1), step):  # the first window's language holds for the rest
            parts.append(self._transcribe_window(audio[start:start + step], language, task, beam_size, max_new_tokens,
                                                 prompt, pad_seconds, prefix if start == 0 else None))
            language = parts[0].language
            prompt = " ".join(x for x in (prompt, parts[-1].text.strip()) if x)
        if len(parts) == 1:
            return parts[0]
        text = " ".join(p.text.strip() for p in parts if p.text.strip())
        return Transcription(text=text, language=parts[0].language, tokens=tuple(t for p in parts for t in p.tokens),
                             avg_logprob=float(np.mean([p.avg_logprob for p in parts])),
                             compression_ratio=compression_ratio(text),
                             no_speech_prob=float(min(p.no_speech_prob for p in parts)),
                             language_prob=parts[0].language_prob, task=task, duration_s=len(audio) / SAMPLE_RATE)

    # ---- decoding --------------------------------------------------------------------------------------------
    @staticmethod
    def _check_audio(audio) -> np.ndarray:
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono 1-D 16 kHz samples, got shape {audio.shape}")
        return audio.astype(np.float32, copy=False)

    def _context(self, prompt: str | None) -> list[int]:
        """<|startofprev|> + the prompt's last tokens, or nothing."""
        if not prompt or not prompt.strip():
            return []
        return [self.tokenizer.specials.sot_prev] + self.tokenizer.encode(" " + prompt.strip())[-MAX_PROMPT_TOKENS:]

    def _transcribe_window(self, audio, language, task, beam_size, max_new_tokens, prompt=None,
                           pad_seconds=None, prefix=None) -> Transcription:
        cross = self._encode(audio, pad_seconds)
        language_prob = None
        if language is None:
            language, language_prob = self._detect(cross)[0]
        duration = len(audio) / SAMPLE_RATE
        context = self._context(prompt)
        forced = self.tokenizer.encode(" " + prefix.strip()) if prefix and prefix.strip() else []
        start = context + self.tokenizer.prompt(language, task) + forced
        limit = max_new_tokens or min(MAX_NEW_TOKENS, max(16, int(duration * MAX_TOKENS_PER_SECOND)))
        limit = min(limit, self.n_text_ctx - len(start))
        tokens, sum_logprob, no_speech = self._decode(cross, start, beam_size, limit, sot_at=len(context),
                                                      may_end_first=bool(forced))
        text = self.tokenizer.decode(tokens)
        return Transcription(text=text, language=language, tokens=tuple(tokens),
                             avg_logprob=sum_logprob / (len(tokens) + 1), compression_ratio=compression_ratio(text),
                             no_speech_prob=no_speech, language_prob=language_prob, task=task, duration_s=duration)

    def _filtered_logprobs(self, logits: np.ndarray, first: bool) -> np.ndarray:
        logits = logits.astype(np.float32, copy=True)
        logits[:, self._suppress] = -np.inf
        if first:
            logits[:, self._begin] = -np.inf
        return _log_softmax(logits)

    def _decode(self, cross, prompt: list[int], beam_size: int, limit: int,
                sot_at: int = 0, may_end_first: bool = False) -> tuple[list[int], float, float]:
        """Beam search as openai-whisper's (beam_size=1 is greedy): -> (tokens, sum of log-probs, no-speech prob).
        `sot_at`: position of <|startoftranscript|> in `prompt` (after any previous-text context)."""
        eot = self.tokenizer.specials.eot
        logits, cache = self._step(np.array([prompt], dtype=np.int64), self._empty_cache(1), cross, (sot_at, -1))
        sot_logits = logits[0, 0].astype(np.float64)
        sot_probs = np.exp(sot_logits - sot_logits.max())
        no_speech = float(sot_probs[self.tokenizer.specials.no_speech] / sot_probs.sum())
        beams: list[tuple[list[int], float]] = [([], 0.0)]
        finished: list[tuple[list[int], float]] = []
        last = logits[:, -1]
        for step in range(limit):
            logprobs = self._filtered_logprobs(last, first=step == 0 and not may_end_first)
            candidates = []
            for b, (toks, score) in enumerate(beams):
                if beam_size == 1:
                    top = [int(np.argmax(logprobs[b]))]
                else:
                    top = np.argpartition(-logprobs[b], beam_size)[: beam_size + 1]
                candidates += [(score + float(logprobs[b, t]), toks + [int(t)], b) for t in top]
            candidates.sort(key=lambda c: -c[0])
            beams, sources = [], []
            for score, toks, b in candidates:
                loop = ends_in_loop(toks) if self.cut_loops else 0
                if loop:
                    log.debug("decoding loop of %d tokens cut", loop)
                if toks[-1] == eot or loop:
                    if len(finished) < beam_size:
                        finished.append((toks[:-1] if not loop else toks[:-loop], score))
                else:
                    beams.append((toks, score))
                    sources.append(b)
                if len(beams) == beam_size:
                    break
            if len(finished) >= beam_size or not beams:
                break
            if step == limit - 1:
                break
            if sources != list(range(cache[0].shape[0])):  # reorder / duplicate the cache to follow the beams
                cache = [c[sources] for c in cache]
            logits, cache = self._step(np.array([[t[-1]] for t, _ in beams], dtype=np.int64), cache, cross)
            last = logits[:, -1]
        if not finished:
            finished = beams
        tokens, score = max(finished, key=lambda f: f[1] / (len(f[0]) + 1))
        return tokens, score, no_speech


def smoke_test(model_dir: str | Path, providers: Sequence[str] = ("cpu",)) -> list:
    """Load the model and decode one second of a quiet tone; raises on any failure. Returns the sessions' placement."""
    model = WhisperModel.load(model_dir, providers, threads=1, profile=True)
    t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    result = model.transcribe(0.01 * np.sin(2 * np.pi * 440 * t).astype(np.float32), language="en", max_new_tokens=8)
    if not isinstance(result.text, str) or not (0.0 <= result.no_speech_prob <= 1.0):
        raise RuntimeError(f"{model_dir}: Whisper smoke inference returned an invalid result")
    return model.placement
