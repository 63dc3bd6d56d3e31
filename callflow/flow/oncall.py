"""Who is on call now: a rotation's shifts are tried in order, the first whose calendar is
open gives the people to ring; the last shift, with no calendar, is the default."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..schedule import OverrideStore, timeline
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
    flow: LoadedFlow, rotation: str, start: datetime, end: datetime
) -> list[OnCallSpan]:
    """Who is on call over [start, end): the shift can only change where one of the
    rotation's calendars changes, so it is evaluated at those boundaries only."""
    cuts = {start}
    for shift in flow.spec.oncall[rotation]:
        if shift.calendar is not None:
            cuts.update(i.start for i in timeline(flow.calendars[shift.calendar], start, end))
    spans: list[OnCallSpan] = []
    points = sorted(c for c in cuts if start <= c < end)
    for i, t in enumerate(points):
        stop = points[i + 1] if i + 1 < len(points) else end
        now = on_call(flow, rotation, t)
        if spans and spans[-1].on_call == now:
            spans[-1] = OnCallSpan(spans[-1].start, stop, now)
        else:
            spans.append(OnCallSpan(t, stop, now))
    return spans
