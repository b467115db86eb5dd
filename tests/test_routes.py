import pytest

from appliance.routes import Hop, describe, find_route, reachable

PAIRS = {("en", "pt"), ("pt", "en"), ("en", "de")}


@pytest.mark.parametrize(
    "src, tgt, expected",
    [
        ("en", "en", ()),
        ("en", "pt", (Hop("en", "pt", "mt"),)),
        ("pt", "en", (Hop("pt", "en", "mt"),)),
        ("pt", "de", (Hop("pt", "en", "mt"), Hop("en", "de", "mt"))),
        ("es", "en", (Hop("es", "en", "whisper"),)),
        ("es", "pt", (Hop("es", "en", "whisper"), Hop("en", "pt", "mt"))),
        ("en", "fr", None),
        ("es", "fr", None),
    ],
)
def test_find_route(src, tgt, expected):
    assert find_route(src, tgt, PAIRS) == expected


def test_without_whisper_translate_no_pivot_for_unknown_source():
    assert find_route("es", "pt", PAIRS, whisper_to_english=False) is None
    assert find_route("pt", "de", PAIRS, whisper_to_english=False) is not None


def test_describe_and_reachable():
    assert describe(find_route("es", "pt", PAIRS)) == "es → en (whisper) → pt (mt)"
    assert describe(None) == "no route" and describe(()) == "as spoken"
    assert reachable(["es"], PAIRS) == {"es", "en", "pt", "de"}
    assert reachable(["en"], {("en", "pt")}, whisper_to_english=False) == {"en", "pt"}
