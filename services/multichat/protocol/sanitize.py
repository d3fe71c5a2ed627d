"""Text that reaches other people's terminals: what is removed, and why.

A message is shown in a terminal, where C0 and C1 control characters are commands: ESC and CSI
(U+009B) start escape sequences that clear the screen, set the window title (OSC 0), write the
clipboard (OSC 52) or talk to the terminal (DCS); BEL rings, CR returns to the start of the line
to overwrite what was there. Bidi controls reorder what follows them: "abc", U+202E, "def" shows
as "abcfed". All of these are removed. Only the introducer is removed from an escape sequence:
the rest ("[2J", "]0;title") is plain text, harmless and visible, which also shows the reader
that someone tried.

Kept: newlines (messages may have several lines), zero-width joiner and non-joiner (emoji
sequences, Persian and Indic spelling), variation selectors (emoji and kanji forms), private-use
characters (icon fonts), and code points this Python's Unicode does not know yet (newer emoji).
Changed: CR LF, lone CR, VT, FF, NEL and the Unicode line and paragraph separators become LF; a
tab becomes one space, since its width depends on a terminal column the sender cannot see, and
so that cleaning never lengthens text. Removed besides controls: every other format character
(Cf: bidi controls, zero-width space, word joiner, soft hyphen, interlinear annotation, and tag
characters, whose other use is hiding ASCII text, at the cost of subdivision flags falling back
to a black flag), reserved default ignorable code points, lone surrogates (a JSON string can
carry them) and noncharacters. Combining marks are not limited: a terminal stacks them inside
one cell.
"""

from __future__ import annotations

import re

# ergo allows 4,096 bytes of text by default; Discord 4,000 characters with Nitro.
MAX_TEXT_CHARS = 4000

# Removed: (first, last) code points, inclusive.
_REMOVED = (
    (0x0000, 0x0009),  # C0 controls but LF; tab, CR, VT and FF are mapped below instead
    (0x000B, 0x001F),
    (0x007F, 0x009F),  # DEL and the C1 controls, among them CSI (U+009B)
    (0xD800, 0xDFFF),  # surrogates, which only a broken encoder or JSON "\ud800" produces
    (0xFDD0, 0xFDEF),  # noncharacters
    # Format characters (Cf) as of Unicode 15.1 but ZWNJ and ZWJ; a test checks that this
    # Python's unicodedata knows of no others.
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200B),
    (0x200E, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),  # with U+2065, reserved default ignorable
    (0xFEFF, 0xFEFF),
    (0xFFF0, 0xFFFB),  # U+FFF0-FFF8 reserved default ignorable, then interlinear annotation
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE00FF),  # tags and reserved default ignorables; then, kept, the variation
    (0xE01F0, 0xE0FFF),  # selectors that pick a kanji's form; then reserved again
)
_TO_NEWLINE = "\r\x0b\x0c\x85\u2028\u2029"
_TO_SPACE = "\t"


def _build() -> tuple[dict[int, str | None], re.Pattern[str]]:
    table: dict[int, str | None] = {}
    removed = [*_REMOVED]
    # The noncharacters at the end of each plane: U+FFFE, U+FFFF, U+1FFFE, ...
    removed += [(plane << 16 | 0xFFFE, plane << 16 | 0xFFFF) for plane in range(17)]
    for lo, hi in removed:
        table.update(dict.fromkeys(range(lo, hi + 1)))
    table.update({ord(ch): "\n" for ch in _TO_NEWLINE})
    table.update({ord(ch): " " for ch in _TO_SPACE})
    char_class = "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in sorted(removed))
    specials = re.escape(_TO_NEWLINE + _TO_SPACE)
    return table, re.compile(f"[{char_class}{specials}]")


# One table, and a regex of the same characters: the search is the fast "nothing to do" check.
_TABLE, _UNSAFE = _build()


def clean_text(text: str) -> str:
    """Return `text` with everything a terminal would obey, or hide text with, taken out.

    Idempotent, and never longer than `text`.
    """
    # Everything in the table is non-printable to Python (a test checks), so printable text,
    # the common case in any script and with several lines, needs no look-up at all.
    if text.replace("\n", " ").isprintable():
        return text
    if _UNSAFE.search(text) is None:
        return text
    return text.replace("\r\n", "\n").translate(_TABLE)


def clean_for_terminal(text: str, *, single_line: bool = False) -> str:
    """What a client may show of text from the server, which it does not have to trust.

    `clean_text`'s rules; with `single_line` (names, titles, a status bar) newlines become
    spaces.
    """
    cleaned = clean_text(text)
    return cleaned.replace("\n", " ") if single_line else cleaned


def too_long(text: str, limit: int = MAX_TEXT_CHARS) -> bool:
    """Whether `text` has more than `limit` characters (code points, as `len` counts)."""
    return len(text) > limit
