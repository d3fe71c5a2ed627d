"""Text shown in other people's terminals: no escape sequence, no bidi trick survives."""

from __future__ import annotations

import timeit
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multichat.protocol import sanitize
from multichat.protocol.sanitize import MAX_TEXT_CHARS, clean_for_terminal, clean_text, too_long

FAST = settings(max_examples=200, deadline=None)
LONG = settings(max_examples=10_000, deadline=None)

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=200)
# Mostly the characters that matter here, so examples are dense in them.
NASTY_TEXT = st.text(
    st.one_of(
        st.characters(max_codepoint=0xA0),
        st.sampled_from("\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202e\u2066\u2069\u2028"),
        st.characters(exclude_categories=()),
    ),
    max_size=200,
)

BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("\x1b[2J", "[2J"),  # clear screen: only the introducer goes
        ("\x1b]0;pwned\x07", "]0;pwned"),  # OSC 0, window title
        ("\x1b]52;c;cm0gLXJmIH4=\x07", "]52;c;cm0gLXJmIH4="),  # OSC 52, clipboard
        ("\x1bP+q544e\x1b\\", "P+q544e\\"),  # DCS ... ST
        ("a\x9b2Jb", "a2Jb"),  # 8-bit CSI
        ("a\x9d0;t\x9cb", "a0;tb"),  # 8-bit OSC and ST
        ("over\rwrite", "over\nwrite"),  # a bare CR would overwrite the line
        ("dos\r\nline", "dos\nline"),
        ("bell\x07", "bell"),
        ("del\x7f", "del"),
        ("nul\x00", "nul"),
        ("tab\there", "tab here"),
        ("v\x0bf\x0cn\x85", "v\nf\nn\n"),
        ("ls\u2028ps\u2029", "ls\nps\n"),
        ("abc\u202edef", "abcdef"),  # right-to-left override
        ("x\u2066y\u2069z", "xyz"),  # isolates
        ("\u200eltr\u200f\u061c", "ltr"),
        ("zero\u200bwidth\u2060joiner\ufeff", "zerowidthjoiner"),
        ("soft\u00adhyphen", "softhyphen"),
        ("tag\U000e0041\U000e007f", "tag"),  # tag characters can smuggle hidden ASCII
        ("lone\ud800surrogate\udfff", "lonesurrogate"),
        ("non\ufdd0char\uffff\U0010fffe", "nonchar"),
        ("ann\ufff9otation\ufffb", "annotation"),
    ],
)
def test_removed(dirty: str, clean: str) -> None:
    assert clean_text(dirty) == clean
    assert clean_for_terminal(dirty) == clean


@pytest.mark.parametrize(
    "text",
    [
        "plain ASCII, as most messages are",
        "two\nlines",
        "Gr\u00fc\u00dfe, \u041f\u0440\u0438\u0432\u0435\u0442, \u65e5\u672c\u8a9e",
        "\u0645\u0631\u062d\u0628\u0627 hello",  # right-to-left script without controls
        "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",  # ZWJ emoji sequence
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian, with ZWNJ
        "\u2764\ufe0f and \u8fbb\U000e0100",  # emoji and ideographic variation selectors
        "\ue0b0 powerline glyph",  # private use
        "no\u00a0break",
    ],
)
def test_kept(text: str) -> None:
    assert clean_text(text) == text


def test_single_line_for_names_and_titles() -> None:
    assert clean_for_terminal("a\r\nb\x1b[1m", single_line=True) == "a b[1m"


def test_too_long() -> None:
    assert not too_long("x" * MAX_TEXT_CHARS)
    assert too_long("x" * (MAX_TEXT_CHARS + 1))
    assert too_long("abc", limit=2)


def test_table_covers_every_control_and_format_character() -> None:
    """The table is written out by hand, so a newer Unicode must not slip past it."""
    kept = {"\n", "\u200c", "\u200d"}
    for cp in range(0x110000):
        ch = chr(cp)
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") and ch not in kept:
            assert cp in sanitize._TABLE, f"U+{cp:04X} is not cleaned"


def test_table_holds_only_non_printable_characters() -> None:
    """clean_text returns printable text as it is: that is only right if this holds."""
    assert not [cp for cp in sanitize._TABLE if chr(cp).isprintable()]


def _clean_property(text: str) -> None:
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    assert len(cleaned) <= len(text)
    for ch in cleaned:
        cp = ord(ch)
        assert cp >= 0x20 or ch == "\n"
        assert not 0x7F <= cp <= 0x9F
        assert ch not in BIDI_CONTROLS
        assert unicodedata.category(ch) not in ("Cs", "Zl", "Zp")
        assert unicodedata.category(ch) != "Cf" or ch in "\u200c\u200d"
    if text.isprintable():
        assert cleaned is text


@FAST
@given(NASTY_TEXT)
def test_clean_text_is_idempotent_and_safe(text: str) -> None:
    _clean_property(text)


@FAST
@given(ANY_TEXT)
def test_clean_text_is_idempotent_and_safe_any_text(text: str) -> None:
    _clean_property(text)


@pytest.mark.slow
@LONG
@given(NASTY_TEXT)
def test_clean_text_is_idempotent_and_safe_long(text: str) -> None:
    _clean_property(text)


@pytest.mark.slow
@LONG
@given(ANY_TEXT)
def test_clean_text_is_idempotent_and_safe_any_text_long(text: str) -> None:
    _clean_property(text)


@pytest.mark.slow
def test_speed() -> None:
    """Runs on every message: a clean 100-character message should cost about a microsecond.

    The bounds are loose so a busy machine does not fail it; the printout is the measurement.
    """
    ascii_text = ("An ordinary chat message, in plain ASCII, as most of them are. " * 2)[:100]
    other_text = ("Gr\u00fc\u00dfe aus K\u00f6ln! \u041f\u0440\u0438\u0432\u0435\u0442 " * 5)[:100]
    dirty_text = ("\x1b[2J\u202e" + "x" * 100)[:100]
    for name, text, bound in [
        ("ascii", ascii_text, 5e-6),
        ("non-ascii", other_text, 5e-6),
        ("dirty", dirty_text, 50e-6),
    ]:
        runs = 100_000
        timer = timeit.Timer("clean_text(text)", globals={"clean_text": clean_text, "text": text})
        seconds = min(timer.repeat(number=runs, repeat=5)) / runs
        print(f"clean_text, 100 characters, {name}: {seconds * 1e6:.2f} us")
        assert seconds < bound
