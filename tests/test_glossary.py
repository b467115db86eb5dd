"""The glossary: validation, the file store, prompt terms, placeholder enforcement on the real Bergamot models,
and the panel page through Flask's test client."""

from __future__ import annotations

import html
import json

import pytest
from test_panel_app import Panel

from appliance import glossary as gl
from appliance.glossary import Entry, Glossary, GlossaryError, GlossaryStore, validate
from appliance.translate.enforce import GlossaryTranslator, protect, restore

PAIRS = [("en", "pt"), ("pt", "en")]


def test_validation_rejects_empty_terms_duplicates_and_unsupported_pairs_naming_each():
    ok = validate([{"source": "EN", "target": "pt", "term": "  UNICEF "},
                   {"source": "en", "target": "pt", "term": "the board", "translation": "o conselho"}], PAIRS)
    assert ok == [Entry("en", "pt", "UNICEF"), Entry("en", "pt", "the board", "o conselho")]
    with pytest.raises(GlossaryError) as exc:
        validate([{"source": "en", "target": "pt", "term": "UNICEF"}, {"source": "en", "target": "pt", "term": " "},
                  {"source": "en", "target": "pt", "term": "unicef"}, {"source": "en", "target": "de", "term": "X"},
                  {"source": "en", "target": "pt", "term": "Y", "colour": "red"}], PAIRS)
    msg = str(exc.value)
    assert "entry 2: the term is empty" in msg
    assert "entry 3: 'unicef' (en->pt) is a duplicate of entry 1" in msg
    assert "entry 4: en->de is not a supported language pair; supported: en->pt, pt->en" in msg
    assert "entry 5: unknown keys colour" in msg
    same_term_other_pair = validate([{"source": "en", "target": "pt", "term": "EU"},
                                     {"source": "pt", "target": "en", "term": "EU"}], PAIRS)
    assert len(same_term_other_pair) == 2


def test_store_saves_atomically_rereads_on_change_and_keeps_the_file_on_bad_input(tmp_path):
    store = GlossaryStore(tmp_path / "glossary.json")
    assert store.current() == Glossary()
    store.save([{"source": "en", "target": "pt", "term": "UNICEF"}], PAIRS)
    other = GlossaryStore(store.path)  # the pipeline's own reader
    assert [e.term for e in other.current().entries] == ["UNICEF"]
    before = store.path.read_text()
    with pytest.raises(GlossaryError):
        store.save([{"source": "en", "target": "pt", "term": ""}], PAIRS)
    assert store.path.read_text() == before and not list(tmp_path.glob(".glossary.json.*"))
    store.save([{"source": "en", "target": "pt", "term": "UNICEF"}, {"source": "pt", "target": "en", "term": "Porto"}],
               PAIRS)
    assert [e.term for e in other.current().entries] == ["UNICEF", "Porto"]
    store.path.write_text("{not json")
    assert GlossaryStore(store.path).current() == Glossary()  # logged; translation goes on without it


def test_prompt_terms_give_the_terms_spoken_in_a_language(tmp_path):
    g = Glossary((Entry("en", "pt", "UNICEF"), Entry("en", "pt", "the board", "o conselho"),
                  Entry("pt", "en", "Assembleia da República"), Entry("en", "pt", "Frigate")))
    assert g.prompt_terms("en") == ["UNICEF", "the board", "Frigate"]
    assert g.prompt_terms("pt") == ["o conselho", "Assembleia da República"]
    store = gl.store_for(tmp_path)
    store.save([e.to_dict() for e in g.entries], PAIRS)
    gl.install(store)
    try:
        assert gl.prompt_terms("pt") == ["o conselho", "Assembleia da República"]
    finally:
        gl.install(None)
    assert gl.prompt_terms("pt") == []


def test_protect_and_restore_whole_words_any_case_longest_first():
    entries = Glossary((Entry("en", "pt", "Union"), Entry("en", "pt", "European Union", "UE"),
                        Entry("en", "pt", "EU"))).for_pair("en", "pt")
    p = protect("The european  union and the EU met the Union; EUROPE stays.", entries)
    assert p.text == "The ZX1 and the ZX3 met the ZX2; EUROPE stays."  # numbered by entry, longest term first
    assert restore("A ZX1 e a ZX 3 encontraram a ZX2.", p) == "A UE e a EU encontraram a Union."
    assert restore("A ZX1 e a ZX3 encontraram.", p) is None  # a lost placeholder is noticed


class _DropsPlaceholders:
    """Beside the real test below: a model that loses every ZX/KZ placeholder, to reach the last fallback."""

    def __init__(self):
        self.calls = []

    def translate(self, texts, beam_size=1):
        self.calls.append(list(texts))
        return [t.replace("ZX1", "").replace("KZ1", "") for t in texts]


def test_a_lost_placeholder_is_tried_with_the_next_style_then_translated_plainly():
    inner = _DropsPlaceholders()
    t = GlossaryTranslator(inner, "en", "pt", lambda: Glossary((Entry("en", "pt", "UNICEF"),)))
    assert t.translate(["Ask UNICEF.", "Nothing here."]) == ["Ask ZZ1.".replace("ZZ1", "UNICEF"), "Nothing here."]
    assert inner.calls == [["Ask ZX1.", "Nothing here."], ["Ask KZ1."], ["Ask ZZ1."]]


@pytest.fixture(scope="module")
def en_pt(built_model):
    from appliance.translate import Translator

    return Translator.load(built_model("bergamot-en-pt"))


def test_real_model_keeps_and_forces_terms_through_placeholders(en_pt):
    g = Glossary((Entry("en", "pt", "Bergamot Project"), Entry("en", "pt", "the board", "o conselho de administração")))
    enforced = GlossaryTranslator(en_pt, "en", "pt", lambda: g)
    texts = ["The Bergamot Project will present the report tomorrow.", "We discussed the proposal with the board.",
             "The weather is nice today."]
    out = enforced.translate(texts)
    assert "Bergamot Project" in out[0] and "o conselho de administração" in out[1].lower()
    assert out[2] == en_pt.translate([texts[2]])[0]  # no term: the model's own translation
    assert "Bergamot Project" not in en_pt.translate([texts[0]])[0]  # without the glossary the name is translated


def test_real_model_candidates_for_the_round_trip_guard_keep_and_force_terms(en_pt, built_model):
    """The round-trip guard reranks n-best candidates (translate_nbest): each carries the glossary's terms too, and
    the guarded translation of a final keeps them."""
    from appliance.translate import Translator
    from appliance.translate.roundtrip import RoundTripTranslator

    forced = "a direção executiva"  # not what the model says for "the board"
    g = Glossary((Entry("en", "pt", "the board", forced),))
    enforced = GlossaryTranslator(en_pt, "en", "pt", lambda: g)
    text = "We discussed the proposal with the board."
    candidates = enforced.translate_nbest(text, 4)
    assert candidates and all(forced in c.lower() for c, _ in candidates), candidates
    assert not any(forced in c.lower() for c, _ in en_pt.translate_nbest(text, 4))  # the model's own words
    assert enforced.translate_nbest("The weather is nice today.", 4) == en_pt.translate_nbest("The weather is nice today.", 4)
    checked = RoundTripTranslator(enforced, Translator.load(built_model("bergamot-pt-en")), 4).translate(text)
    assert not checked.withheld and forced in checked.text.lower(), checked


def test_bench_glossary_on_one_configured_entry(tmp_path, models_dir, built_model):
    from appliance.bench import glossary_bench

    built_model("bergamot-pt-en")
    store = GlossaryStore(tmp_path / "glossary.json")
    store.save([{"source": "pt", "target": "en", "term": "Assembleia da República"}], PAIRS)
    (row,) = glossary_bench.run(models_dir, store.path)
    assert row["pair"] == "pt->en" and row["sentences"] == len(glossary_bench.TEMPLATES["pt"])
    assert row["ok"] == (row["placeholders_pct"] >= glossary_bench.TARGET_PCT) and row["baseline_pct"] is not None


# ---- panel -----------------------------------------------------------------------------------------------------
@pytest.fixture
def panel(tmp_path):
    return Panel(tmp_path, state_dir=tmp_path / "state").setup_and_login()


def test_panel_adds_validates_and_deletes_glossary_terms(panel, tmp_path):
    token = panel.token("/glossary")
    page = panel.client.get("/glossary")
    assert page.status_code == 200 and '<option value="en->pt">' in page.text and "No terms yet." in page.text
    r = panel.client.post("/glossary/add", data={"csrf_token": token, "pair": "en->pt", "term": "UNICEF",
                                                 "rule": "keep"}, follow_redirects=True)
    assert "Glossary saved." in r.text and "UNICEF" in r.text
    r = panel.client.post("/glossary/add", data={"csrf_token": token, "pair": "en->pt", "term": "the board",
                                                 "rule": "force", "translation": "o conselho"}, follow_redirects=True)
    assert "translate as “o conselho”" in r.text
    saved = json.loads((tmp_path / "state" / "glossary.json").read_text())["entries"]
    assert saved == [{"source": "en", "target": "pt", "term": "UNICEF", "translation": ""},
                     {"source": "en", "target": "pt", "term": "the board", "translation": "o conselho"}]
    for data, message in (({"pair": "en->pt", "term": "unicef", "rule": "keep"}, "is a duplicate of entry 1"),
                          ({"pair": "en->pt", "term": "   ", "rule": "keep"}, "entry 3: the term is empty"),
                          ({"pair": "en->de", "term": "X", "rule": "keep"}, "en->de is not a supported language pair"),
                          ({"pair": "en->pt", "term": "X", "rule": "force"}, "needs the translation text")):
        r = panel.client.post("/glossary/add", data={"csrf_token": token, **data})
        assert r.status_code == 400 and message in html.unescape(r.text), message
    r = panel.client.post("/glossary/0/delete", data={"csrf_token": token}, follow_redirects=True)
    assert "UNICEF" not in r.text.split("<h2>")[0]
    assert [e["term"] for e in json.loads((tmp_path / "state" / "glossary.json").read_text())["entries"]] == ["the board"]
    assert panel.client.post("/glossary/5/delete", data={"csrf_token": token}).status_code == 404
