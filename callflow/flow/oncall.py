"""Who is on call now: a rotation's shifts are tried in order, the first whose calendar is
open gives the people to ring; the last shift, with no calendar, is the default."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..schedule import OverrideStore
from .registry import LoadedFlow


@dataclass(frozen=True)
class OnCall:
    rotation: str
    people: list[str]
    shift: str  # the calendar that chose them, or "default"


def on_call(
    flow: LoadedFlow, rotation: str, at: datetime, overrides: OverrideStore | None = None
) -> OnCall:
    for shift in flow.spec.oncall[rotation]:
        if shift.calendar is None:
            return OnCall(rotation, list(shift.people), "default")
        override = overrides.get(f"{flow.name}/{shift.calendar}", at) if overrides else None
        if flow.calendars[shift.calendar].state_at(at, override).open:
            return OnCall(rotation, list(shift.people), shift.calendar)
    return OnCall(rotation, [], "nobody")


@dataclass(frozen=True)
class OnCallSpan:
    start: datetime
    end: datetime
    on_call: OnCall


def on_call_timeline(
    flow: LoadedFlow, rotation: str, start: datetime, end: datetime, step: timedelta
) -> list[OnCallSpan]:
    """Who is on call over [start, end), sampled every ``step`` and merged into spans.

    Shift changes follow calendar boundaries, which fall on minutes: a one-minute step is
    exact, a coarser one is a preview."""
    spans: list[OnCallSpan] = []
    t = start
    while t < end:
        now = on_call(flow, rotation, t)
        if spans and spans[-1].on_call == now:
            spans[-1] = OnCallSpan(spans[-1].start, min(t + step, end), now)
        else:
            spans.append(OnCallSpan(t, min(t + step, end), now))
        t += step
    return spans
