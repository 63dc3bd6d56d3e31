"""When to drill: in the last open hour before each closure, holiday or weekend.

Computed from a flow's calendars, in UTC instants (so a DST change inside the window moves
nothing: 18:00 local before a 19:00 closing stays 18:00 local, summer or winter).  A
*closed period* is a run of closed intervals of one calendar; it earns a drill when one of
its intervals is a closure or a public holiday, or when it lasts at least ``long`` (24 h: a
weekend, a bridge; a weekday night does not).  The drill goes ``lead`` before the period
starts, or at the start of the open interval before it when that is shorter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from ..schedule import Calendar, Interval, Source, timeline

LEAD = timedelta(hours=1)
LONG = timedelta(hours=24)


def _closed_runs(intervals: list[Interval]) -> list[tuple[int, list[Interval]]]:
    """Maximal runs of closed intervals, each with the index of its first interval."""
    runs: list[tuple[int, list[Interval]]] = []
    for i, iv in enumerate(intervals):
        if iv.state.open:
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == i:
            runs[-1][1].append(iv)
        else:
            runs.append((i, [iv]))
    return runs


def _earns_drill(run: list[Interval], long: timedelta) -> bool:
    if any(iv.state.source in (Source.CLOSURE, Source.HOLIDAY) for iv in run):
        return True
    return run[-1].end - run[0].start >= long


def calendar_drill_times(
    cal: Calendar,
    start: datetime,
    horizon: timedelta,
    *,
    lead: timedelta = LEAD,
    long: timedelta = LONG,
) -> list[datetime]:
    """The drill instants (UTC) of one calendar whose closed period starts after ``start``
    and within ``horizon`` (the run is looked at ``long`` further, to see its length)."""
    intervals = timeline(cal, start, start + horizon + long)
    out: list[datetime] = []
    for first, run in _closed_runs(intervals):
        if first == 0:
            continue  # closed at the start of the window: its open hour is behind us
        closing = run[0].start.astimezone(UTC)
        if closing > start + horizon or not _earns_drill(run, long):
            continue
        opened = intervals[first - 1].start.astimezone(UTC)
        out.append(max(opened, closing - lead))
    return out


def drill_times(
    calendars: Mapping[str, Calendar],
    start: datetime,
    horizon: timedelta,
    *,
    lead: timedelta = LEAD,
    long: timedelta = LONG,
) -> list[datetime]:
    """The drill instants (UTC, sorted, each once) of a flow's calendars."""
    found = {
        t
        for cal in calendars.values()
        for t in calendar_drill_times(cal, start, horizon, lead=lead, long=long)
    }
    return sorted(found)
