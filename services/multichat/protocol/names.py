"""Member names: what a name may contain, and when two names are the same person.

Policy, after RFC 8265's UsernameCaseMapped profile (PRECIS IdentifierClass), loosened for a
chat among friends: letters, marks, digits, punctuation and symbols of any script, and single
spaces between words ("Ann B"), which IdentifierClass forbids but friends' names need. Controls,
format characters (bidi controls, zero-width joiners), invisible fillers, line separators,
private-use, unassigned and surrogate code points are refused rather than silently dropped, so
that what a person typed is what the room shows.

`check_name` gives the display form; `name_key` gives the uniqueness key, which folds case,
compatibility forms (fullwidth, math alphabets) and look-alikes (Unicode TR39 confusables), so
that "Alice", "alice", fullwidth "ALICE" and "Alice" with a Cyrillic capital A cannot be in one
room together.

Rooms are named by the same rules and told apart the same way (`check_room_name`, `room_key`):
"Den" and "den" are one room, so nobody can open a look-alike of a room to lure its members.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from functools import cache, lru_cache
from importlib import resources

from .errors import RemoteProtocolError

# Discord's display names allow 32 characters; IRC networks allow 16 to 30.
MAX_NAME_CHARS = 32
# A base character with more marks than this is "zalgo" text that spills over the lines above
# and below; Vietnamese needs 2 and Indic clusters about 4. (UAX #15's stream-safe limit is 30.)
MAX_MARKS_PER_CHAR = 4
# Skeleton and case folding feed each other (the prototype of "0" is "O"): no single character
# needs more than three rounds with the shipped table, the rest is margin.
MAX_KEY_ROUNDS = 8

_DATA_FILE = "confusables.txt"

_REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Co": "a private-use character",
    "Cn": "an unassigned character",
    "Cs": "a lone surrogate",
}

# Bidi controls reorder the text around them: "Eve\u202egnp.exe" shows as "Eveexe.png".
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)

# Default_Ignorable_Code_Point (DerivedCoreProperties.txt) minus the Cf characters refused by
# category anyway: letters and marks that draw nothing, the classic way to make a blank name or
# a second "alice". U+2800 BRAILLE PATTERN BLANK is not ignorable but draws nothing either.
_INVISIBLE_RANGES = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),  # HANGUL CHOSEONG/JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ/AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS
    (0x2800, 0x2800),  # BRAILLE PATTERN BLANK
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTORS
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xE0100, 0xE01EF),  # VARIATION SELECTORS SUPPLEMENT
)


def _is_invisible(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _INVISIBLE_RANGES)


def _refuse(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, code="bad_name")


def _describe(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def check_name(raw: str) -> str:
    """Return the display form of `raw` (NFC, spaces trimmed and single), or raise.

    Raises RemoteProtocolError with code "bad_name" and a short message saying what is wrong.
    """
    # Other spaces (no-break, ideographic, en/em) become plain ones, as PRECIS FreeformClass
    # maps them, so "Ann\u00a0B" and "Ann B" are one display form.
    mapped = "".join(" " if ch != " " and unicodedata.category(ch) == "Zs" else ch for ch in raw)
    name = " ".join(word for word in unicodedata.normalize("NFC", mapped).split(" ") if word)
    if not name:
        raise _refuse("name is empty" if not raw else "name is only spaces")
    if len(name) > MAX_NAME_CHARS:
        raise _refuse(f"name is too long ({len(name)} characters; at most {MAX_NAME_CHARS})")
    for ch in name:
        category = unicodedata.category(ch)
        if ch in _BIDI_CONTROLS:
            raise _refuse(f"name contains a bidirectional control ({_describe(ch)})")
        if category in _REFUSED_CATEGORIES:
            what = _REFUSED_CATEGORIES[category]
            raise _refuse(f"name contains {what} ({_describe(ch)})")
        if _is_invisible(ord(ch)):
            raise _refuse(f"name contains an invisible character ({_describe(ch)})")
    # Marks are counted decomposed, as the terminal stacks them.
    marks = 0
    previous = " "
    for ch in unicodedata.normalize("NFD", name):
        if unicodedata.category(ch).startswith("M"):
            if previous == " ":
                raise _refuse("a word of the name starts with a combining mark")
            marks += 1
            if marks > MAX_MARKS_PER_CHAR:
                raise _refuse("name has too many combining marks on one character")
        else:
            marks = 0
        previous = ch
    if not name_key(name):
        raise _refuse("name has no visible characters")
    return name


def _fold(text: str) -> str:
    """Case and compatibility folding: an approximation of Unicode's toNFKC_Casefold."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


@cache
def _prototypes() -> dict[str, str]:
    """The confusables table shipped in data/ (see scripts/gen_confusables.py)."""
    table: dict[str, str] = {}
    text = resources.files("multichat.protocol").joinpath("data", _DATA_FILE).read_text("utf-8")
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        source, *prototype = line.split()
        table[chr(int(source, 16))] = "".join(chr(int(cp, 16)) for cp in prototype)
    return table


def _skeleton(text: str) -> str:
    """TR39's skeleton: NFD, each character to its prototype, NFD again."""
    table = _prototypes()
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(table.get(ch, ch) for ch in decomposed))


# A room has a few thousand names at most, and the history keys every entry's sender (6 us
# each, uncached): remembering the recent ones makes that a dictionary lookup.
NAME_KEYS_CACHED = 4096


@lru_cache(maxsize=NAME_KEYS_CACHED)
def name_key(name: str) -> str:
    """The uniqueness key of a display name: two names with one key may not share a room.

    Folds case and compatibility forms, drops spaces ("Ann B" is "AnnB"), then maps look-alikes
    to one prototype (TR39 skeleton), repeating until nothing changes.
    """
    key = _fold(name).replace(" ", "")
    for _ in range(MAX_KEY_ROUNDS):
        folded = _fold(_skeleton(key)).replace(" ", "")
        if folded == key:
            break
        key = folded
    return key


def key_of(raw: str) -> str | None:
    """The uniqueness key of `raw` if members may have it as a name, else None."""
    try:
        return name_key(check_name(raw))
    except RemoteProtocolError:
        return None


def check_room_name(raw: str) -> str:
    """The display form of a room's name, by the rules of a member's name; or raise
    RemoteProtocolError with code "bad_room" and a short message saying what is wrong."""
    try:
        return check_name(raw)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(str(exc).replace("name", "room name", 1), "bad_room") from None


def room_key(name: str) -> str:
    """The uniqueness key of a room's display name: case, width and look-alikes folded."""
    return name_key(name)


def is_address(text: str) -> bool:
    """Whether `text` is an IP address, not a name (a ban's target may be either)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
