"""Member names: what check_name refuses, what it gives back, and which names collide."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multichat.protocol.errors import RemoteProtocolError
from multichat.protocol.names import (
    MAX_MARKS_PER_CHAR,
    MAX_NAME_CHARS,
    check_name,
    check_room_name,
    key_of,
    name_key,
    room_key,
)

FAST = settings(max_examples=200, deadline=None)
LONG = settings(max_examples=10_000, deadline=None)

# Any code point, lone surrogates included: a JSON string can carry them.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)
# Letters of the scripts where case folding and look-alikes meet.
CASED = st.text(
    st.characters(
        include_characters="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ",
        min_codepoint=0x20,
        max_codepoint=0x4FF,
        categories=("Lu", "Ll", "Nd"),
    ),
    min_size=1,
    max_size=MAX_NAME_CHARS,
)


@pytest.mark.parametrize(
    ("raw", "display"),
    [
        ("Alice", "Alice"),
        ("  Ann   B  ", "Ann B"),
        ("Ann\u00a0B", "Ann B"),  # no-break space
        ("Ann\u3000B", "Ann B"),  # ideographic space
        ("Zoe\u0308", "Zo\u00eb"),  # NFC composes the diaeresis
        ("\uff21lice", "\uff21lice"),  # fullwidth stays as typed: only the key folds it
        ("\u0412\u0430\u0441\u044f", "\u0412\u0430\u0441\u044f"),  # Cyrillic
        ("\u674e\u5c0f\u9f8d", "\u674e\u5c0f\u9f8d"),  # Han
        ("O'Brien-Smith", "O'Brien-Smith"),
        ("\U0001f600 grin", "\U0001f600 grin"),  # symbols are allowed
        ("x" * MAX_NAME_CHARS, "x" * MAX_NAME_CHARS),
        ("Vi\u1ec7t", "Vi\u1ec7t"),  # two marks on one letter, precomposed by NFC
    ],
)
def test_display_form(raw: str, display: str) -> None:
    assert check_name(raw) == display


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("   ", "only spaces"),
        ("x" * (MAX_NAME_CHARS + 1), "too long"),
        ("a\x07b", "control"),
        ("a\nb", "control"),
        ("a\tb", "control"),
        ("a\x1b[2Jb", "control"),
        ("a\x9bb", "control"),
        ("a\u202eb", "bidirectional"),
        ("a\u2066b", "bidirectional"),
        ("a\u200fb", "bidirectional"),
        ("a\u200db", "invisible"),  # zero-width joiner
        ("a\u200bb", "invisible"),  # zero-width space
        ("a\ufeffb", "invisible"),
        ("a\u00adb", "invisible"),  # soft hyphen
        ("a\U000e0041b", "invisible"),  # tag letter
        ("\u3164", "invisible"),  # Hangul filler, the classic blank name
        ("\u2800", "invisible"),  # braille blank
        ("a\ufe0fb", "invisible"),  # variation selector
        ("a\u2028b", "line separator"),
        ("a\u2029b", "paragraph separator"),
        ("a\ue000b", "private-use"),
        ("a\u0378b", "unassigned"),
        ("a\ufdd0b", "unassigned"),  # noncharacter
        ("a\ud800b", "surrogate"),
        ("\u0301a", "combining mark"),
        ("a \u0301b", "combining mark"),
        ("a" + "\u0301" * (MAX_MARKS_PER_CHAR + 1), "too many combining marks"),
    ],
)
def test_refused(raw: str, why: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_name(raw)
    assert info.value.code == "bad_name"
    assert why in str(info.value)


def test_marks_up_to_the_limit_are_allowed() -> None:
    name = "a" + "\u0301\u0302\u0303\u0304"[:MAX_MARKS_PER_CHAR]
    assert check_name(name) == unicodedata.normalize("NFC", name)


@pytest.mark.parametrize(
    "names",
    [
        ("Alice", "alice", "ALICE", "\uff21\uff2c\uff29\uff23\uff25"),  # fullwidth
        ("admin", "\u0430dmin", "\u0430dm\u0456n"),  # Cyrillic a, then a and i
        ("Alice", "\u0410lice"),  # Cyrillic capital A
        ("Tom", "\u0422om", "\u0422\u041e\u041c", "\u0442\u043e\u043c"),  # Cyrillic, any case
        ("Bob", "\u0412\u041e\u0412", "b0b"),  # Cyrillic capitals; zero for o
        ("Ian", "ian", "lan", "1an", "\u0399an"),  # I, i, l, 1 and Greek Iota
        ("mary", "rnary"),
        ("Ann B", "AnnB", "ann  b"),
        ("\U0001d400lice", "Alice"),  # mathematical bold A
        ("Stra\u00dfe", "STRASSE"),
    ],
)
def test_colliding_names(names: tuple[str, ...]) -> None:
    keys = {name_key(check_name(name)) for name in names}
    assert len(keys) == 1, keys


@pytest.mark.parametrize(
    ("a", "b"),
    [("Alice", "Alicia"), ("Zo\u00eb", "Zoe"), ("Bob", "Rob"), ("Ann", "Anne")],
)
def test_different_names(a: str, b: str) -> None:
    assert name_key(check_name(a)) != name_key(check_name(b))


def _check_name_property(raw: str) -> None:
    try:
        name = check_name(raw)
    except RemoteProtocolError as exc:
        assert exc.code == "bad_name"
        return
    assert check_name(name) == name
    assert 0 < len(name) <= MAX_NAME_CHARS
    assert name == name.strip() and "  " not in name
    assert name_key(name)


@FAST
@given(ANY_TEXT)
def test_check_name_raises_only_bad_name_and_is_stable(raw: str) -> None:
    _check_name_property(raw)


@pytest.mark.slow
@LONG
@given(ANY_TEXT)
def test_check_name_raises_only_bad_name_and_is_stable_long(raw: str) -> None:
    _check_name_property(raw)


def _case_property(text: str) -> None:
    assert name_key(text.upper()) == name_key(text.lower()) == name_key(text)


@FAST
@given(CASED)
def test_key_ignores_case(text: str) -> None:
    _case_property(text)


@pytest.mark.slow
@LONG
@given(CASED)
def test_key_ignores_case_long(text: str) -> None:
    _case_property(text)


@pytest.mark.parametrize(
    ("raw", "display"),
    [("den", "den"), ("  Board   Games ", "Board Games"), ("ｄｅｎ", "ｄｅｎ")],
)
def test_room_names_follow_the_name_rules(raw: str, display: str) -> None:
    assert check_room_name(raw) == display


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "room name is empty"),
        ("x" * 33, "room name is too long"),
        ("den\u202e", "room name contains a bidirectional control"),
        ("\u0301den", "a word of the room name starts with a combining mark"),
    ],
)
def test_bad_room_names_say_why_with_their_own_code(raw: str, why: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_room_name(raw)
    assert info.value.code == "bad_room"
    assert why in str(info.value)


def test_look_alike_rooms_are_one_room() -> None:
    assert room_key("Den") == room_key("den") == room_key("ｄｅｎ") == room_key("Dеn")  # Cyrillic е
    assert room_key("den") != room_key("dan")


def test_key_of_is_the_key_of_a_good_name_and_none_for_a_bad_one() -> None:
    assert key_of("Ann B") == name_key(check_name("Ann B")) == key_of("annb")
    assert key_of("") is None and key_of("a\nb") is None
