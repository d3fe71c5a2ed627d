"""Personal invites: instead of the password, a few times, for a while, maybe for one name."""

from __future__ import annotations

import trio
import trio.testing

from chatpeer import RELAXED, Peer, RoomFixture, host_command, start_room
from multichat.protocol.events import (
    Error,
    Hello,
    InviteIssued,
    InviteList,
    Notice,
    Welcome,
)
from multichat.server.invites import InviteBook, InviteError, StoredInvite, digest

STEP = 10
TOKEN = "host-token"


async def host(room: RoomFixture, command: str, *args: str) -> object:
    return await host_command(room.port, TOKEN, command, *args)


async def join_with(room: RoomFixture, name: str, invite: str) -> object:
    peer = await Peer.open(room.port)
    await peer.send(Hello(name, "", invite=invite))
    return await peer.next_event()


async def test_an_invite_works_instead_of_the_password_as_often_as_it_says() -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        with trio.fail_after(STEP):
            issued = await host(room, "invite", "uses=2")
            assert isinstance(issued, InviteIssued)
            first = await join_with(room, "ann", issued.token)
            second = await join_with(room, "ben", issued.token)
            third = await join_with(room, "cat", issued.token)
            listed = await host(room, "invites")
    assert isinstance(first, Welcome) and isinstance(second, Welcome)
    assert isinstance(third, Error) and third.code == "bad_invite"
    assert listed == InviteList(())


async def test_an_invite_for_a_name_reserves_it_and_works_for_it_alone() -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        with trio.fail_after(STEP):
            issued = await host(room, "invite", "name=Dana", "uses=1")
            assert isinstance(issued, InviteIssued)
            squatter = await Peer.open(room.port)
            await squatter.send(Hello("dana", "correct horse"))  # right password, kept name
            taken = await squatter.next_event()
            wrong = await join_with(room, "eve", issued.token)
            right = await join_with(room, "DANA", issued.token)
    assert isinstance(taken, Error) and taken.code == "name_taken"
    assert isinstance(wrong, Error) and wrong.code == "bad_invite" and "Dana" in wrong.message
    assert isinstance(right, Welcome)


async def test_revoked_and_unknown_invites_count_as_wrong_passwords() -> None:
    limits = RELAXED.replace(failed_passwords_per_minute=2)
    async with start_room(limits, control_token=TOKEN) as room:
        with trio.fail_after(STEP):
            issued = await host(room, "invite")
            assert isinstance(issued, InviteIssued)
            revoked = await host(room, "revoke", issued.invite.id)
            gone = await join_with(room, "ann", issued.token)
            guess = await join_with(room, "ann", "not-a-token")
            throttled = await join_with(room, "ann", "another-guess")
    assert isinstance(revoked, Notice)
    assert isinstance(gone, Error) and gone.code == "bad_invite"
    assert isinstance(guess, Error) and guess.code == "bad_invite"
    assert isinstance(throttled, Error) and throttled.code == "throttled"


def test_invites_expire_and_are_kept_as_digests_only() -> None:
    now = [1000.0]
    book = InviteBook(clock=lambda: now[0])
    kept: list[list[StoredInvite]] = []
    book.on_change = kept.append
    invite, token = book.issue(uses=3, seconds=60)
    assert token not in repr(kept[-1]) and kept[-1][0].digest == digest(token)
    now[0] += 61
    try:
        book.redeem(token, "anyone", str.lower)
    except InviteError as exc:
        assert "expired" in str(exc)
    else:
        raise AssertionError("an expired invite let someone in")
    assert book.live() == []
    restored = InviteBook(clock=lambda: 1000.0)
    restored.restore(kept[-1])
    assert restored.redeem(token, "x", str.lower).id == invite.id, "kept across a restart"


async def test_a_bad_invite_command_is_one_clear_error() -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        with trio.fail_after(STEP):
            answers = [
                await host(room, "invite", "uses=0"),
                await host(room, "invite", "uses=many"),
                await host(room, "invite", "colour=red"),
                await host(room, "invite", "name=\u202e"),
                await host(room, "revoke", "nope"),
            ]
    assert all(isinstance(a, Error) and a.code == "bad_command" for a in answers), answers


async def test_a_dropped_member_rejoins_with_its_invite_without_spending_a_use() -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        with trio.fail_after(STEP):
            issued = await host(room, "invite", "uses=1")
            assert isinstance(issued, InviteIssued)
            first = await Peer.open(room.port)
            await first.send(Hello("ann", "", invite=issued.token))
            assert isinstance(await first.next_event(), Welcome)
            await first.aclose()  # the connection drops
            await trio.testing.wait_all_tasks_blocked()
            again = await join_with(room, "ann", issued.token)
            other = await join_with(room, "ben", issued.token)
            revoked = await host(room, "revoke", issued.invite.id)
    assert isinstance(again, Welcome), "ann comes back"
    assert isinstance(other, Error) and other.code == "bad_invite", "nobody else"
    assert isinstance(revoked, Error), "used up: nothing left to revoke"
