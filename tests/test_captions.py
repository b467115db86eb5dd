"""Caption layout: 42-character lines, 2 lines, roll-up (pure, table-driven)."""

import pytest

from appliance.captions import LINE_WIDTH, MAX_LINES, layout, roll_up, wrap

LONG = "Supercalifragilisticexpialidocious" * 2  # 68 characters, no space

WRAP = [
    ("", []),
    ("   ", []),
    ("Good morning.", ["Good morning."]),
    ("  Good \n morning\teveryone  ", ["Good morning everyone"]),
    ("a" * 42, ["a" * 42]),
    ("a" * 43, ["a" * 42, "a"]),
    (LONG, [LONG[:42], LONG[42:]]),
    ("x " + LONG, ["x", LONG[:42], LONG[42:]]),
    ("The budget is approved, but we need two more people for the support team.",
     ["The budget is approved, but we need two", "more people for the support team."]),
    ("word " * 9 + "end", ["word word word word word word word word", "word end"]),
]


@pytest.mark.parametrize("text,lines", WRAP)
def test_wrap(text, lines):
    assert wrap(text) == lines
    assert all(len(line) <= LINE_WIDTH for line in wrap(text))


LAYOUT = [
    ("Good morning.", ["Good morning."]),
    ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen",
     ["nine ten eleven twelve thirteen fourteen", "fifteen sixteen"]),
    ("a" * 130, ["a" * 42, "a" * 4]),
]


@pytest.mark.parametrize("text,lines", LAYOUT)
def test_layout_keeps_the_last_two_lines(text, lines):
    assert layout(text) == lines
    assert len(layout(text)) <= MAX_LINES


@pytest.mark.parametrize("shown,text,lines", [
    ([], "Good morning.", ["Good morning."]),
    (["Good morning."], "Let us begin.", ["Good morning.", "Let us begin."]),
    (["Good morning.", "Let us begin."], "First item.", ["Let us begin.", "First item."]),
    (["Good morning."], "The budget is approved, but we need two more people for the support team.",
     ["The budget is approved, but we need two", "more people for the support team."]),
])
def test_roll_up_adds_lines_without_reflowing(shown, text, lines):
    assert roll_up(shown, text) == lines


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"max_lines": 0}])
def test_bad_sizes_are_refused(kwargs):
    with pytest.raises(ValueError):
        layout("text", **kwargs)


def test_other_widths():
    assert layout("one two three", width=7, max_lines=3) == ["one two", "three"]
    assert wrap("abcdefgh", width=3) == ["abc", "def", "gh"]
