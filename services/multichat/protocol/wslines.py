"""JSON lines as WebSocket text messages: one line is one message, either way. No I/O.

Over TCP, multichat/1 is a stream of lines; over WebSocket each line travels as one text
message without its newline (docs/protocol.md). These helpers turn one into the other, so a
transport can hand the connection objects the same lines whichever way they arrived.
"""

from __future__ import annotations

from .errors import LocalProtocolError

# A JSON text has no raw control characters inside its strings (RFC 8259 section 7), so a
# line break in a message can only be whitespace between tokens: a space means the same and
# keeps a pretty-printed object on one line.
_LINE_BREAKS = bytes.maketrans(b"\r\n", b"  ")


def message_bytes(text: str, *, finished: bool) -> bytes:
    """The line bytes for (a piece of) a received text message; the newline once `finished`."""
    data = text.encode("utf-8").translate(_LINE_BREAKS)
    return data + b"\n" if finished else data


class LineSplitter:
    """Bytes of JSON lines in, one text message per complete line out."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = bytearray()  # a line whose newline has not come yet

    def __len__(self) -> int:
        return len(self._partial)

    def feed(self, data: bytes | bytearray | memoryview) -> list[str]:
        """The complete lines in what was fed so far, without newlines; blank lines dropped.

        Raises LocalProtocolError if a line is not UTF-8: the caller encoded it, so it is ours.
        """
        self._partial += data
        end = self._partial.rfind(b"\n")
        if end < 0:
            return []
        complete = bytes(self._partial[:end])
        del self._partial[: end + 1]
        try:
            text = complete.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LocalProtocolError(f"a line to send is not UTF-8 ({exc.reason})") from None
        return [line for line in text.split("\n") if line.strip()]
