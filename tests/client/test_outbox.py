"""The outbox alone: where each typed line stands, from typing to its echo or refusal."""

from __future__ import annotations

import trio
import trio.testing

from multichat.client.outbox import RETRY_UNAVAILABLE_SECONDS, Outbox
from multichat.protocol.events import Error


def texts(outbox: Outbox) -> list[str]:
    return [line.text for line in outbox]


def test_a_line_waits_for_its_echo_once_taken() -> None:
    outbox = Outbox()
    first, second = outbox.add_nowait("one"), outbox.add_nowait("two", to="bob", action=True)
    assert first.id != second.id and first.id.split("-")[0] == second.id.split("-")[0]
    assert (second.to, second.action) == ("bob", True)
    assert len(outbox) == 2 and not outbox.awaiting_echo
    assert outbox.take_nowait() == [first, second]
    assert texts(outbox) == [] and outbox.awaiting_echo and len(outbox) == 2
    outbox.acknowledge_nowait(first.id)
    outbox.acknowledge_nowait("someone-else's")
    assert len(outbox) == 1
    outbox.acknowledge_nowait(second.id)
    assert len(outbox) == 0 and not outbox.awaiting_echo


def test_each_refusal_has_its_fate() -> None:
    outbox = Outbox()
    lines = [outbox.add_nowait(text) for text in ("long", "later", "redis", "request", "new")]
    outbox.take_nowait()
    # Without an id, the room answers in order: the oldest line not yet echoed.
    assert outbox.refuse_nowait(Error("too_long", "too long"), 10.0) == (lines[0], "dropped")
    assert outbox.refuse_nowait(Error("shutting_down", "closing"), 10.0) == (lines[1], "deferred")
    refused = outbox.refuse_nowait(Error("unavailable", "away", id=lines[2].id), 10.0)
    assert refused == (lines[2], "retried")
    assert outbox.retry_at == 10.0 + RETRY_UNAVAILABLE_SECONDS
    # A refused request is no line's, even with lines waiting.
    assert outbox.refuse_nowait(Error("not_operator", "you are not an operator"), 10.0) is None
    # A refusal this client does not know (a newer server's), naming its line: given up, so
    # the member sees the server's reason instead of the line waiting silently forever.
    refused = outbox.refuse_nowait(Error("slow_mode", "one line a minute", id=lines[4].id), 10.0)
    assert refused == (lines[4], "dropped")
    assert len(outbox) == 3  # the dropped ones are gone; the others will go again


def test_a_private_line_to_nobody_is_found_by_the_name_quoted() -> None:
    outbox = Outbox()
    public, to_bob, to_carol = (
        outbox.add_nowait("hi"),
        outbox.add_nowait("psst", to="bob"),
        outbox.add_nowait("psst", to="carol"),
    )
    outbox.take_nowait()
    error = Error("no_such_member", "there is no 'carol' in the room")
    assert outbox.refuse_nowait(error, 0.0) == (to_carol, "dropped")
    assert outbox.refuse_nowait(Error("no_such_member", "there is no 'dave'"), 0.0) is None
    outbox.acknowledge_nowait(public.id)
    outbox.acknowledge_nowait(to_bob.id)
    assert len(outbox) == 0


def test_retrying_lines_go_first_once_due_unless_echoed_meanwhile() -> None:
    outbox = Outbox()
    lost, echoed = outbox.add_nowait("a"), outbox.add_nowait("b")
    outbox.take_nowait()
    for line in (lost, echoed):
        outbox.refuse_nowait(Error("unavailable", "away", id=line.id), 5.0)
    outbox.add_nowait("c")
    outbox.acknowledge_nowait(echoed.id)  # "may have gone through", and it did
    outbox.retry_due_nowait(5.0 + RETRY_UNAVAILABLE_SECONDS - 0.1)
    assert texts(outbox) == ["c"]
    outbox.retry_due_nowait(5.0 + RETRY_UNAVAILABLE_SECONDS)
    assert texts(outbox) == ["a", "c"] and outbox.retry_at == float("inf")


def test_a_lost_connection_requeues_everything_in_the_order_typed() -> None:
    outbox = Outbox()
    sent = [outbox.add_nowait(text) for text in ("1", "2", "3", "4")]
    outbox.take_nowait()
    outbox.refuse_nowait(Error("unavailable", "away", id=sent[0].id), 0.0)
    outbox.refuse_nowait(Error("not_joined", "not in the room", id=sent[1].id), 0.0)
    outbox.add_nowait("5")
    outbox.requeue_nowait()
    assert texts(outbox) == ["1", "2", "3", "4", "5"]
    assert not outbox.awaiting_echo and outbox.retry_at == float("inf")


def test_only_a_line_sent_on_a_broken_connection_can_be_claimed_by_the_replay() -> None:
    outbox = Outbox()
    sent = outbox.add_nowait("tab\there\x07")
    outbox.take_nowait()
    outbox.add_nowait("tab here")  # typed later, never sent: not the replayed one
    outbox.requeue_nowait()
    assert outbox.claim_replayed_nowait("tab here") is sent  # compared as the room cleans it
    assert outbox.claim_replayed_nowait("tab here") is None
    assert texts(outbox) == ["tab here"]


async def test_waiting_for_acknowledgements_ends_with_the_last_echo_or_refusal() -> None:
    outbox = Outbox()
    await outbox.wait_acknowledged()  # nothing typed: nothing to wait for
    first, second = outbox.add_nowait("one"), outbox.add_nowait("two")
    outbox.take_nowait()
    done: list[float] = []

    async def waiter() -> None:
        await outbox.wait_acknowledged()
        done.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        outbox.acknowledge_nowait(first.id)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []
        outbox.refuse_nowait(Error("empty", "empty message", id=second.id), 0.0)
    assert len(done) == 1


async def test_settling_wakes_a_waiter_with_lines_left() -> None:
    outbox = Outbox()
    outbox.add_nowait("never echoed")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.wait_acknowledged)
            await trio.testing.wait_all_tasks_blocked()
            outbox.settle_nowait()
    assert len(outbox) == 1
