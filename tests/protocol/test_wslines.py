"""JSON lines and WebSocket text messages: one line per message, however the bytes are cut."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multichat.protocol.errors import LocalProtocolError
from multichat.protocol.wslines import LineSplitter, message_bytes

json_objects = st.dictionaries(
    st.text(max_size=8), st.text(max_size=20) | st.integers() | st.none(), max_size=4
)


def as_line(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


@given(st.lists(json_objects, max_size=8), st.data())
def test_lines_come_out_whole_however_the_bytes_are_cut(
    objects: list[dict[str, object]], data: st.DataObject
) -> None:
    stream = b"".join(as_line(obj) for obj in objects)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    splitter = LineSplitter()
    messages: list[str] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        messages += splitter.feed(stream[start:end])
    assert [json.loads(m) for m in messages] == objects
    assert len(splitter) == 0


def test_a_partial_line_waits_and_blank_lines_are_dropped() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"type":"who"}\n{"type":') == ['{"type":"who"}']
    assert len(splitter) == len(b'{"type":')
    assert splitter.feed(b'"quit"}\n\n  \n') == ['{"type":"quit"}']
    assert len(splitter) == 0


def test_a_line_cut_inside_a_character_is_whole_once_complete() -> None:
    splitter = LineSplitter()
    line = '{"text":"☕"}\n'.encode()
    assert splitter.feed(line[:11]) == []
    assert splitter.feed(line[11:]) == ['{"text":"☕"}']


def test_bytes_that_are_not_utf8_are_our_mistake() -> None:
    with pytest.raises(LocalProtocolError, match="not UTF-8"):
        LineSplitter().feed(b'{"text":"\xff"}\n')


@given(json_objects, st.sampled_from(["\n", "\r\n", " \n  "]))
def test_a_received_message_is_one_line_meaning_the_same(
    obj: dict[str, object], newline: str
) -> None:
    pretty = json.dumps(obj, ensure_ascii=False, indent=1).replace("\n", newline)
    line = message_bytes(pretty, finished=True)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == obj


def test_a_message_in_pieces_ends_its_line_once() -> None:
    pieces = [message_bytes('{"type":', finished=False), message_bytes('"who"}', finished=True)]
    assert b"".join(pieces) == b'{"type":"who"}\n'
