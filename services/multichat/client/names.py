"""Names in text, as the chat window needs them: does a line mention mine, and which member
does a half-typed word mean (Tab).

A mention is my name as a whole word (or run of words: names may have spaces), compared the way
the room compares names (`protocol.names.name_key`: case, width and look-alikes ignored), so
"ALICE", "alice" in fullwidth letters and "@alice:" all ring, and "malice" does not. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..protocol.names import name_key
from .commands import COMMAND_NAMES, JOIN_COMMANDS, NAME_COMMANDS

# What people put around a name without it being part of it: "@bob", "bob:", "(bob)", "bob!".
EDGE_PUNCTUATION = "@,.:;!?()[]{}<>\"'`*_~"
POSSESSIVES = ("'s", "\u2019s")
# Words whose keys are worth remembering: a chat repeats the same few hundred words and names.
KEY_CACHE = 4096
# Tab after a name at the start of a line addresses that member, as IRC clients do.
ADDRESS_SUFFIX = ": "


@lru_cache(maxsize=KEY_CACHE)
def _key(word: str) -> str:
    return name_key(word)


def _bare(word: str) -> str:
    word = word.strip(EDGE_PUNCTUATION)
    for possessive in POSSESSIVES:
        if word.lower().endswith(possessive):
            return word[: -len(possessive)]
    return word


def mentions(text: str, name: str) -> bool:
    """Whether `text` names `name` as a whole word or run of words."""
    targets = {key for key in (_key(name), _key(name.strip(EDGE_PUNCTUATION))) if key}
    if not targets:
        return False
    words = text.split()
    if any(_key(word) in targets for word in words):  # a name with punctuation of its own
        return True
    keys = [_key(_bare(word)) for word in words]
    for start in range(len(keys)):
        joined = ""
        for key in keys[start:]:
            joined += key
            if joined in targets:
                return True
            if not joined or not any(t.startswith(joined) for t in targets):
                break
    return False


@dataclass(frozen=True)
class Completion:
    """What Tab may put in place of `line[start:cursor]`, in the order Tab offers them."""

    start: int
    options: tuple[str, ...]


def complete(
    before: str, names: Sequence[str], me: str, rooms: Sequence[str] = ()
) -> Completion | None:
    """Completions of the word being typed; `before` is the line up to the cursor.

    A `/command` at the start of the line completes to a command; the rest of `/join` to one
    of `rooms`; anything else to another member's name, the longest typed run of words that
    starts one (names may have spaces).
    """
    if before.startswith("/") and " " not in before:
        typed = before[1:].lower()
        options = tuple(f"/{c} " for c in COMMAND_NAMES if c.startswith(typed))
        return Completion(0, options) if options else None
    command, _, rest = before.partition(" ")
    if command.lower() in JOIN_COMMANDS:
        start = len(before) - len(rest.lstrip())
        typed = rest.lstrip().strip('"').casefold()
        options = tuple(
            r for r in sorted(rooms, key=str.casefold) if r.casefold().startswith(typed)
        )
        return Completion(start, options) if options else None
    others = sorted((n for n in names if n != me), key=str.casefold)
    starts = [i for i in range(len(before)) if i == 0 or before[i - 1] == " "]
    for start in starts:
        typed = before[start:]
        at = "@" if typed.startswith("@") else ""
        prefix = typed.removeprefix(at).casefold()
        if not prefix:
            continue
        matches = [n for n in others if n.casefold().startswith(prefix)]
        if not matches:
            continue
        command = before[:start].strip().lower().removeprefix("/")
        if before.startswith("/") and command in NAME_COMMANDS:
            # As `/msg "Ann B" hi` reads it: a name with a space is quoted.
            options = tuple(f'"{n}" ' if " " in n else f"{n} " for n in matches)
        elif start == 0:
            options = tuple(f"{at}{n}{ADDRESS_SUFFIX}" for n in matches)
        else:
            options = tuple(f"{at}{n} " for n in matches)
        return Completion(start, options)
    return None
