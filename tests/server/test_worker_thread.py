"""The history's worker thread: calls run off trio's thread, in order, and are never abandoned."""

from __future__ import annotations

import threading

import outcome
import pytest
import trio

from multichat.server.worker_thread import WorkerThread


async def test_calls_run_in_the_thread_in_order_and_results_come_back() -> None:
    trio_thread = threading.get_ident()
    ran: list[tuple[int, int]] = []
    with trio.fail_after(10):
        async with WorkerThread("test") as worker:
            for i in range(20):
                assert (
                    await worker.run_sync(lambda i=i: ran.append((i, threading.get_ident())) or i)
                    == i
                )  # type: ignore[func-returns-value]
    assert [i for i, _ in ran] == list(range(20))
    threads = {ident for _, ident in ran}
    assert len(threads) == 1 and trio_thread not in threads


async def test_an_exception_comes_back_to_the_caller() -> None:
    def fail() -> None:
        raise OSError("disk gone")

    with trio.fail_after(10):
        async with WorkerThread("test") as worker:
            with pytest.raises(OSError, match="disk gone"):
                await worker.run_sync(fail)
            assert await worker.run_sync(lambda: 7) == 7  # the thread goes on


async def test_submitted_calls_report_in_trios_thread_in_order() -> None:
    trio_thread = threading.get_ident()
    seen: list[tuple[object, bool]] = []
    all_done = trio.Event()

    def on_done(result: outcome.Outcome[int]) -> None:
        seen.append((result.unwrap(), threading.get_ident() == trio_thread))
        if len(seen) == 5:
            all_done.set()

    with trio.fail_after(10):
        async with WorkerThread("test") as worker:
            for i in range(5):
                worker.submit_nowait(lambda i=i: i * i, on_done)
            await all_done.wait()
    assert seen == [(i * i, True) for i in range(5)]


async def test_a_cancelled_caller_waits_for_its_call_to_finish() -> None:
    release = threading.Event()
    finished: list[bool] = []

    def slow() -> None:
        release.wait(10)
        finished.append(True)

    scope = trio.CancelScope()

    async def cancel_then_release() -> None:
        await trio.sleep(0.05)
        scope.cancel()
        await trio.sleep(0.05)
        assert not finished  # the cancelled caller is still waiting: never half done
        release.set()

    with trio.fail_after(10):
        async with WorkerThread("test") as worker, trio.open_nursery() as outer:
            outer.start_soon(cancel_then_release)
            with scope:
                await worker.run_sync(slow)
            assert finished == [True]


async def test_a_stopped_worker_takes_nothing() -> None:
    worker = WorkerThread("test")
    with pytest.raises(trio.ClosedResourceError):
        await worker.run_sync(lambda: None)
    async with worker:
        pass
    with pytest.raises(trio.ClosedResourceError):
        worker.submit_nowait(lambda: None, lambda result: None)
