"""Caption layout for displays: lines of at most 42 characters, the last 2 lines shown (roll-up). Pure functions."""

from __future__ import annotations

LINE_WIDTH = 42  # broadcast caption line length (EBU / FCC practice)
MAX_LINES = 2


def _pieces(word: str, width: int) -> list[str]:
    """A word longer than a line is split into line-sized pieces."""
    return [word[i:i + width] for i in range(0, len(word), width)]


def wrap(text: str, width: int = LINE_WIDTH) -> list[str]:
    """Greedy word wrap of `text` (whitespace collapsed) into lines of at most `width` characters."""
    if width < 1:
        raise ValueError(f"caption line width must be at least 1, not {width}")
    lines: list[str] = []
    line = ""
    for word in text.split():
        for piece in _pieces(word, width):
            if not line:
                line = piece
            elif len(line) + 1 + len(piece) <= width:
                line += " " + piece
            else:
                lines.append(line)
                line = piece
    if line:
        lines.append(line)
    return lines


def layout(text: str, width: int = LINE_WIDTH, max_lines: int = MAX_LINES) -> list[str]:
    """The lines a display shows for `text`: wrapped, then rolled up so only the last `max_lines` remain."""
    if max_lines < 1:
        raise ValueError(f"a caption needs at least 1 line, not {max_lines}")
    return wrap(text, width)[-max_lines:]


def roll_up(shown: list[str], text: str, width: int = LINE_WIDTH, max_lines: int = MAX_LINES) -> list[str]:
    """Add `text` as new lines below the lines already `shown` (never re-flowed); keep the last `max_lines`."""
    if max_lines < 1:
        raise ValueError(f"a caption needs at least 1 line, not {max_lines}")
    return [*shown, *wrap(text, width)][-max_lines:]
