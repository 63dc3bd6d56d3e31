"""When drills run: the last open hour before each closure, holiday and weekend (DST-aware),
and the daemon's schedule, which drills each flow once in that hour."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from callflow.drills import DrillResult, DrillRunner, TestCall, drill_times
from callflow.drills.scheduler import Drills
from callflow.flow.registry import LoadedFlow
from callflow.telephony import DialStatus
from tests.support.flows import compile_flow

PARIS = ZoneInfo("Europe/Paris")

FLOW = """
version: 1
flow: cabinet
numbers: ["100"]
timezone: Europe/Paris
calendars:
  office:
    weekly: {{mon-fri: ["08:00-19:00"], sat: [{sat}]}}
    holidays: {{country: FR}}
    closed: [{{from: "2026-12-02 14:00", to: "2026-12-02 19:00", label: formation}}]
destinations:
  telesecretariat: {{number: "0180000000", route: outbound, ring: 6s}}
routes:
  outbound: [trunk-a, trunk-b]
start: hours
steps:
  hours: {{schedule: office, open: after-hours, closed: after-hours}}
  after-hours: {{forward: telesecretariat}}
"""


def flow(sat: str = '"09:00-12:00"') -> LoadedFlow:
    return compile_flow(FLOW.format(sat=sat))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)


def test_before_each_weekend_across_the_autumn_dst_change() -> None:
    # Summer time ends on Sunday 25 October 2026: 11:00 in Paris is 09:00 UTC on the
    # Saturday before, 10:00 UTC the Saturday after.  Weekday nights earn no drill.
    times = drill_times(flow().calendars, local(2026, 10, 19, 0, 0), timedelta(days=14))
    assert times == [utc(2026, 10, 24, 9, 0), utc(2026, 10, 31, 10, 0)]
    assert [t.astimezone(PARIS).hour for t in times] == [11, 11]


def test_before_each_weekend_across_the_spring_dst_change() -> None:
    # Summer time starts on Sunday 29 March 2026.
    times = drill_times(flow().calendars, local(2026, 3, 23, 0, 0), timedelta(days=14))
    assert times == [utc(2026, 3, 28, 10, 0), utc(2026, 4, 4, 9, 0)]


def test_before_a_public_holiday_and_a_closure() -> None:
    # Armistice, Wednesday 11 November 2026: the drill is Tuesday 18:00 (CET).
    times = drill_times(flow().calendars, local(2026, 11, 9, 0, 0), timedelta(days=3))
    assert times == [utc(2026, 11, 10, 17, 0)]
    # A closure of one afternoon earns a drill too (the last open hour: 13:00 to 14:00).
    times = drill_times(flow().calendars, local(2026, 11, 30, 0, 0), timedelta(days=3))
    assert times == [utc(2026, 12, 2, 12, 0)]


def test_an_opening_shorter_than_the_lead_drills_at_its_start() -> None:
    times = drill_times(
        flow('"09:00-09:30"').calendars, local(2026, 10, 19, 0, 0), timedelta(days=7)
    )
    assert times == [utc(2026, 10, 24, 7, 0)]  # 09:00 CEST


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class _Stop(Exception):
    pass


class _Answering:
    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[datetime, str]] = []

    async def call(self, endpoint: str, ring: float, caller_id: str | None) -> TestCall:
        self.calls.append((self.clock.now, endpoint))
        return TestCall(DialStatus.ANSWER, answer_delay=1.0)


async def test_the_daemon_drills_once_in_the_last_open_hour_before_the_weekend() -> None:
    clock = _Clock(local(2026, 10, 23, 10, 0).astimezone(UTC))  # Friday 10:00
    caller = _Answering(clock)
    loaded = flow()
    end = local(2026, 10, 24, 13, 0)

    async def sleep(seconds: float) -> None:
        assert seconds >= 1.0
        clock.now += timedelta(seconds=seconds)
        if clock.now > end:
            raise _Stop

    runner = DrillRunner(caller, lambda t: (True, "reachable"), clock)
    drills = Drills(runner, lambda: {"cabinet": loaded}, None, clock, sleep=sleep)
    with pytest.raises(_Stop):
        await drills._schedule()
    assert caller.calls == [
        (utc(2026, 10, 24, 9, 0), "PJSIP/0180000000@trunk-a"),
        (utc(2026, 10, 24, 9, 0), "PJSIP/0180000000@trunk-b"),
    ]
    assert [r.passed for r in drills.last.values()] == [True, True]
    assert drills.next_drill["cabinet"] == utc(2026, 10, 31, 10, 0)


async def test_a_daemon_started_within_the_hour_drills_at_once() -> None:
    clock = _Clock(local(2026, 10, 24, 11, 40).astimezone(UTC))  # Saturday 11:40
    caller = _Answering(clock)
    loaded = flow()

    async def sleep(seconds: float) -> None:
        raise _Stop

    runner = DrillRunner(caller, lambda t: (True, "reachable"), clock)
    drills = Drills(runner, lambda: {"cabinet": loaded}, None, clock, sleep=sleep)
    with pytest.raises(_Stop):
        await drills._schedule()
    assert [t for t, _ in caller.calls] == [clock.now, clock.now]


async def test_a_due_drill_waits_for_the_pbx_link() -> None:
    clock = _Clock(local(2026, 10, 24, 11, 40).astimezone(UTC))  # Saturday 11:40
    caller = _Answering(clock)
    loaded = flow()
    link = [False]
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        clock.now += timedelta(seconds=seconds)
        link[0] = len(naps) >= 2  # up after two naps
        if len(naps) > 3:
            raise _Stop

    runner = DrillRunner(caller, lambda t: (True, "reachable"), clock)
    drills = Drills(
        runner, lambda: {"cabinet": loaded}, None, clock, sleep=sleep, ready=lambda: link[0]
    )
    with pytest.raises(_Stop):
        await drills._schedule()
    assert naps[:2] == [5.0, 5.0]  # retried soon, not at the next recheck
    assert [t for t, _ in caller.calls] == [local(2026, 10, 24, 11, 40, 10).astimezone(UTC)] * 2


class _FlakyLog:
    """A drill log whose database is away for the first ``down`` writes."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.stored: list[DrillResult] = []

    async def record(self, results: Sequence[DrillResult]) -> None:
        if self.down > 0:
            self.down -= 1
            raise OSError("connection refused")
        self.stored.extend(results)

    async def latest(self) -> tuple[list[DrillResult], list[DrillResult]]:
        return [], []

    def exclusive(self, line: str) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()


def _drills_on_a_flaky_log() -> tuple[Drills, _FlakyLog, _Clock]:
    """Drills by hand whose database is away for the first write."""
    clock = _Clock(local(2026, 10, 23, 10, 0).astimezone(UTC))
    runner = DrillRunner(_Answering(clock), lambda t: (True, "reachable"), clock)
    drill_log = _FlakyLog(down=1)
    loaded = flow()
    drills = Drills(runner, lambda: {"cabinet": loaded}, drill_log, clock, scheduled=False)
    return drills, drill_log, clock


async def test_results_the_database_could_not_take_are_stored_with_the_next_ones() -> None:
    drills, drill_log, clock = _drills_on_a_flaky_log()
    async with drills:
        first = await drills.drill("cabinet")
        assert drill_log.stored == []  # the database was away
        assert [r.passed for r in drills.last.values()] == [True, True]  # the page says it
        clock.now += timedelta(hours=1)
        second = await drills.drill("cabinet")
    assert drill_log.stored == [*first, *second]


async def test_results_not_stored_are_tried_again_when_the_daemon_stops() -> None:
    drills, drill_log, _ = _drills_on_a_flaky_log()
    async with drills:
        results = await drills.drill("cabinet")
        assert drill_log.stored == []
    assert drill_log.stored == results
