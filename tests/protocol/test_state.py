"""The state table, whole: what each side may send in each state."""

from __future__ import annotations

import pytest

from multichat.protocol.errors import LocalProtocolError, RemoteProtocolError
from multichat.protocol.events import (
    AskName,
    Control,
    Error,
    Hello,
    JoinRoom,
    ListRooms,
    Message,
    Password,
    Quit,
    RoomInfo,
    RoomList,
    Say,
    Shutdown,
    Status,
    Welcome,
)
from multichat.protocol.state import Mode, Role, State, legal, next_state

C, S = Role.CLIENT, Role.SERVER
G, A, J, X = State.GREETING, State.ANSWERING, State.JOINED, State.CLOSED


@pytest.mark.parametrize(
    ("mode", "sender", "state", "event", "after"),
    [
        (Mode.JSON, C, G, Hello("a", "b"), A),
        (Mode.JSON, C, G, Control("t", "status"), A),
        (Mode.JSON, S, A, Welcome("a", "r", ()), J),
        (Mode.JSON, S, A, Error("name_taken", ""), X),
        (Mode.JSON, S, A, Status("r", (), 0.0, "v"), X),
        (Mode.JSON, C, J, Say("x"), J),
        (Mode.JSON, C, J, Quit(), State.LEAVING),
        (Mode.JSON, S, State.LEAVING, Message(1, 0, "a", "b"), State.LEAVING),
        (Mode.JSON, S, State.LEAVING, Shutdown("bye"), X),
        (Mode.JSON, S, J, Error("bad_frame", ""), J),
        (Mode.JSON, S, J, Shutdown("bye"), X),
        (Mode.JSON, C, J, ListRooms(), J),
        (Mode.JSON, C, J, JoinRoom("den"), J),
        (Mode.JSON, S, J, RoomList((RoomInfo("den", 1),)), J),
        (Mode.JSON, S, J, Welcome("a", "den", ()), J),  # moved to another room
        (Mode.JSON, S, State.LEAVING, Welcome("a", "den", ()), State.LEAVING),
        (Mode.JSON, S, State.LEAVING, RoomList(()), State.LEAVING),
        (Mode.TEXT, C, J, JoinRoom("den"), J),
        (Mode.TEXT, C, G, Password("p"), A),
        (Mode.TEXT, S, A, AskName(), G),
        (Mode.TEXT, S, A, Error("name_taken", ""), G),
        (Mode.TEXT, S, A, Error("bad_password", ""), X),
        (Mode.TEXT, C, G, Quit(), X),
    ],
)
def test_transitions(mode: Mode, sender: Role, state: State, event: object, after: State) -> None:
    assert next_state(mode, sender, state, event, us=S) is after  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "sender", "state", "event"),
    [
        (Mode.JSON, C, G, Say("x")),
        (Mode.JSON, C, G, Password("p")),
        (Mode.JSON, S, A, AskName()),
        (Mode.JSON, S, G, Message(1, 0, "a", "b")),
        (Mode.JSON, C, A, Hello("a", "b")),
        (Mode.JSON, C, X, Say("x")),
        (Mode.JSON, C, State.LEAVING, Say("x")),
        (Mode.JSON, S, X, Message(1, 0, "a", "b")),
        (Mode.JSON, C, G, JoinRoom("den")),
        (Mode.JSON, C, G, ListRooms()),
        (Mode.JSON, S, G, RoomList(())),
        (Mode.JSON, C, State.LEAVING, JoinRoom("den")),
    ],
)
def test_illegal(mode: Mode, sender: Role, state: State, event: object) -> None:
    assert not legal(mode, sender, state, event)  # type: ignore[arg-type]


def test_error_type_depends_on_who_broke_the_rule() -> None:
    with pytest.raises(RemoteProtocolError):
        next_state(Mode.JSON, C, G, Say("x"), us=S)
    with pytest.raises(LocalProtocolError):
        next_state(Mode.JSON, C, G, Say("x"), us=C)
