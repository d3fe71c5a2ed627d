"""The two error types of the multichat protocol (h11's contract)."""


class ProtocolError(Exception):
    """Base class: `code` is stable and machine-readable, the message is for people."""

    def __init__(self, message: str, code: str = "bad_frame") -> None:
        super().__init__(message)
        self.code = code


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow (a bug on our side)."""
