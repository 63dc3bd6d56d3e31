"""The reconnection policy and supervisor shared by ARI, AMI and the call log's retries."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import pytest

from callflow.reconnect import MIN_DELAY, Backoff, Supervisor

log = logging.getLogger("test.supervisor")


class Sleeps:
    """Records each delay asked for; returns at once, or never when ``block``."""

    def __init__(self, *, block: bool = False) -> None:
        self.delays: list[float] = []
        self.block = block
        self.called = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.called.set()
        if self.block:
            await asyncio.Event().wait()


class MaxRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


class Link:
    """Connections numbered 1, 2…; ``failures`` attempts fail first; ``discarded`` lists
    the connections the supervisor gave back."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.discarded: list[int] = []

    async def connect(self) -> int:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError(f"attempt {self.attempts} refused")
        return self.attempts

    async def discard(self, conn: int) -> None:
        self.discarded.append(conn)


def supervisor(
    link: Link,
    sleep: Sleeps,
    *,
    clock: Callable[[], float] = lambda: 0.0,
) -> Supervisor[int]:
    return Supervisor(
        "test link",
        link.connect,
        Backoff(0.5, 4.0, MaxRng()),
        retry_on=(ConnectionError,),
        discard=link.discard,
        logger=log,
        stable_after=10.0,
        sleep=sleep,
        clock=clock,
    )


def test_backoff_without_jitter_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_backoff_with_jitter_stays_under_the_cap_and_above_the_floor() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(3))
    delays = [backoff.next_delay() for _ in range(40)]
    caps = [min(30.0, 0.5 * 2**i) for i in range(40)]
    assert all(MIN_DELAY <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) > 1


async def test_run_backs_off_reconnects_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    link, sleeps = Link(failures=2), Sleeps()
    sup = supervisor(link, sleeps)
    served: list[tuple[int, bool]] = []

    async def serve(conn: int) -> str:
        served.append((conn, sup.connected))
        if conn == 4:
            sup.stop()  # the second connection is served until the supervisor is stopped
            await asyncio.Event().wait()
        return "peer hung up"

    with caplog.at_level(logging.WARNING, "test.supervisor"):
        await asyncio.wait_for(sup.run(serve), 5)
    assert served == [(3, True), (4, True)]
    assert not sup.connected
    assert sup.connections == 2 and sup.reconnects == 1
    # two refused attempts, then the drop: the delay keeps doubling (never stable: clock 0)
    assert sleeps.delays == [0.5, 1.0, 2.0]
    assert "test link: cannot connect (attempt 1 refused); retrying in 0.50 s" in caplog.text
    assert "test link: disconnected (peer hung up); reconnecting in 2.00 s" in caplog.text


async def test_a_stable_connection_resets_the_backoff() -> None:
    link, sleeps = Link(failures=3), Sleeps()
    readings = iter([0.0, 60.0, 100.0, 100.0])  # the first connection stays up a minute
    sup = supervisor(link, sleeps, clock=lambda: next(readings))

    async def serve(conn: int) -> str:
        if conn == 5:
            sup.stop()
        return "dropped"

    await asyncio.wait_for(sup.run(serve), 5)
    assert sleeps.delays == [0.5, 1.0, 2.0, 0.5]


async def test_stop_cuts_the_backoff_wait_short() -> None:
    link, sleeps = Link(failures=100), Sleeps(block=True)
    sup = supervisor(link, sleeps)
    task = asyncio.create_task(sup.run(lambda conn: asyncio.sleep(0, "unused")))
    await asyncio.wait_for(sleeps.called.wait(), 5)
    sup.stop()
    await asyncio.wait_for(task, 5)
    assert link.attempts == 1 and sup.connections == 0


async def test_stop_ends_a_connection_being_served() -> None:
    link, sleeps = Link(), Sleeps()
    sup = supervisor(link, sleeps)
    serving = asyncio.Event()

    async def serve(conn: int) -> str:
        serving.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(sup.run(serve))
    await asyncio.wait_for(serving.wait(), 5)
    assert sup.connected
    sup.stop()
    await asyncio.wait_for(task, 5)
    assert not sup.connected and sleeps.delays == []


async def test_a_connection_made_while_stopping_is_discarded() -> None:
    link, sleeps = Link(), Sleeps()

    async def connect_then_stop() -> int:
        conn = await link.connect()
        sup.stop()  # close() came while the connection was being made
        return conn

    sup = Supervisor(
        "test link",
        connect_then_stop,
        Backoff(0.5, 4.0),
        retry_on=(ConnectionError,),
        discard=link.discard,
        logger=log,
        sleep=sleeps,
    )
    await asyncio.wait_for(sup.run(lambda conn: asyncio.sleep(0, "unused")), 5)
    assert link.discarded == [1] and sup.connections == 0


async def test_an_unexpected_error_is_not_retried() -> None:
    async def broken() -> int:
        raise LookupError("a bug, not an outage")

    sup = Supervisor(
        "test link",
        broken,
        Backoff(0.5, 4.0),
        retry_on=(ConnectionError,),
        discard=Link().discard,
        logger=log,
        sleep=Sleeps(),
    )
    with pytest.raises(LookupError):
        await sup.run(lambda conn: asyncio.sleep(0, "unused"))


async def test_only_one_loop_at_a_time() -> None:
    link, sleeps = Link(), Sleeps()
    sup = supervisor(link, sleeps)
    serving = asyncio.Event()

    async def serve(conn: int) -> str:
        serving.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(sup.run(serve))
    await asyncio.wait_for(serving.wait(), 5)
    with pytest.raises(RuntimeError, match="already supervised"):
        await sup.run(serve)
    sup.stop()
    await asyncio.wait_for(task, 5)
