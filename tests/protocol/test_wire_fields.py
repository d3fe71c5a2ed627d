"""Each field's rule, as `decode` applies it: the limit, and the one-line refusal past it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from multichat.protocol import wire, wire_fields
from multichat.protocol.errors import RemoteProtocolError
from multichat.protocol.events import Hello, Moderate, Say

LIMIT = wire_fields.MAX_FIELD_CHARS


def frame(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def refusal(**fields: Any) -> str:
    with pytest.raises(RemoteProtocolError) as caught:
        wire.decode(frame(**fields))
    return str(caught.value)


def test_every_frame_type_the_protocol_names_has_a_reader() -> None:
    assert wire.MAX_FIELD_CHARS == LIMIT  # wire's own name for it, as before the split
    assert {"hello", "say", "quit", "welcome", "message", "error", "ban", "gap"} <= set(
        wire_fields.DECODERS
    )


def test_short_fields_stop_at_the_limit() -> None:
    name = "n" * LIMIT
    assert wire.decode(frame(type="hello", name=name, password="p", version=1)) == Hello(
        name, "p", 1
    )
    too_long = refusal(type="hello", name=name + "n", password="p", version=1)
    assert too_long == f"'name' is too long (at most {LIMIT} characters)"
    assert refusal(type="hello", name="a", password="p", version=1, room="r" * (LIMIT + 1)) == (
        "'room' must be a short string"
    )


def test_message_text_is_not_a_short_field() -> None:
    # The room says "too long" itself, with the limit people read; the frame only bounds it.
    text = "t" * (LIMIT * 4)
    assert wire.decode(frame(type="say", text=text)) == Say(text)


def test_ids_are_short_strings_or_integers_a_browser_keeps_exactly() -> None:
    top = wire_fields.MAX_INTEGER_ID
    assert wire.decode(frame(type="say", text="x", id=top)) == Say("x", top)
    assert "within +-2**53" in refusal(type="say", text="x", id=top + 1)
    assert "within +-2**53" in refusal(type="say", text="x", id=True)


def test_durations_are_positive_and_at_most_a_year() -> None:
    year = wire_fields.MAX_SECONDS
    assert wire.decode(frame(type="mute", name="bob", seconds=year)) == Moderate(
        "mute", "bob", "", year
    )
    for seconds in (0, -1, year + 1):
        assert refusal(type="mute", name="bob", seconds=seconds) == (
            "'seconds' must be more than 0 and at most a year"
        )
    assert wire.decode(frame(type="ban", target="1.2.3.4", seconds=None)) == Moderate(
        "ban", "1.2.3.4"
    )


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"since": -1}, "'since' must be a seq: 0 or more"),
        ({"since": "3"}, "'since' must be an integer"),
        ({"since": 1.5}, "'since' must be an integer"),
        ({"version": True}, "'version' must be an integer"),
        ({"password": None}, "frame is missing 'password'"),
    ],
)
def test_hello_fields_are_refused_by_name(fields: dict[str, Any], said: str) -> None:
    hello = {"type": "hello", "name": "a", "password": "p", "version": 1} | fields
    if fields.get("password", "") is None:
        del hello["password"]
    assert refusal(**hello) == said


def test_lists_and_maps_hold_what_they_say() -> None:
    assert refusal(type="members", names=["a", 1]) == "'names' must be a list of names"
    assert refusal(type="members", names=[], away={"a": 1}) == "'away' must map names to texts"
    assert refusal(type="bans", bans=[{"address": "x", "until": "soon"}]) == (
        "'until' must be a number or null"
    )
    assert refusal(type="rooms", rooms=["lobby"]) == "a room must be an object"
