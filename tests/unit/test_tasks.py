"""The owner of background tasks (``callflow.tasks.Tasks``)."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings

import pytest

from callflow.tasks import Tasks


async def test_a_failing_task_is_logged_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    async def fail() -> None:
        raise LookupError("boom")

    async with Tasks("owner") as tasks:
        task = tasks.spawn(fail(), "doomed")
        assert task is not None
        await asyncio.wait({task})
    assert "owner: task doomed failed" in caplog.text and "LookupError: boom" in caplog.text


async def test_a_task_whose_failure_the_caller_handles_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        raise LookupError("boom")

    async with Tasks("owner") as tasks:
        task = tasks.spawn(fail(), "pump", report=False)
        assert task is not None
        with pytest.raises(LookupError):
            await task
    assert "boom" not in caplog.text


async def test_aclose_cancels_every_task_and_waits_for_its_clean_up() -> None:
    tasks = Tasks("owner")
    ended: list[str] = []
    started = asyncio.Event()

    async def forever(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # clean-up that itself awaits: aclose waits for it
            ended.append(name)

    tasks.spawn(forever("a"), "a")
    tasks.spawn(forever("b"), "b")
    await started.wait()
    assert len(tasks) == 2
    await tasks.aclose()
    assert sorted(ended) == ["a", "b"] and len(tasks) == 0
    assert tasks.closed
    await tasks.aclose()  # idempotent


async def test_nothing_is_spawned_after_aclose(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Tasks("owner")
    await tasks.aclose()
    ran: list[bool] = []

    async def work() -> None:
        ran.append(True)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine left unawaited would warn on collection
        with caplog.at_level(logging.WARNING):
            assert tasks.spawn(work(), "late") is None
        gc.collect()
    assert ran == [] and "late not started: shutting down" in caplog.text


async def test_wait_lets_tasks_end_by_themselves_then_stops_waiting() -> None:
    finish = asyncio.Event()
    async with Tasks("owner") as tasks:
        quick = tasks.spawn(finish.wait(), "quick")
        slow = tasks.spawn(asyncio.Event().wait(), "slow")
        assert quick is not None and slow is not None
        finish.set()
        await tasks.wait(0.2)  # the loop's own clock: returns with 'slow' still running
        assert quick.done() and not quick.cancelled()
        assert not slow.done()
    assert slow.cancelled()
