"""Each calendar's state now, and runtime overrides as the admin API takes them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..flow.registry import FlowSet, LoadedFlow
from ..schedule import Calendar, Override, OverrideStore, Source
from ..schedule.localtime import localize

# An override further ahead than this is a typo (a year instead of a month), refused.
MAX_OVERRIDE = timedelta(days=366)
MAX_LABEL = 200


class BadRequest(ValueError):
    """The request is wrong: a 400 with this message."""


def calendar_key(flow: str, calendar: str) -> str:
    """The key of the engine's ``OverrideStore`` for a flow's calendar."""
    return f"{flow}/{calendar}"


@dataclass(frozen=True)
class CalendarView:
    """One calendar of one flow, now: what ``GET /api/calendars`` shows."""

    flow: str
    calendar: str
    timezone: str
    open: bool
    source: str
    reason: str
    label: str | None
    until: datetime | None  # next change, in the calendar's time zone
    override: Override | None

    @property
    def overridden(self) -> bool:
        return self.source == Source.OVERRIDE

    @property
    def key(self) -> str:
        return calendar_key(self.flow, self.calendar)

    def to_json(self) -> dict[str, Any]:
        o = self.override
        return {
            "flow": self.flow,
            "calendar": self.calendar,
            "key": self.key,
            "timezone": self.timezone,
            "state": "open" if self.open else "closed",
            "open": self.open,
            "overridden": self.overridden,
            "source": self.source,
            "reason": self.reason,
            "label": self.label,
            "until": self.until.isoformat() if self.until else None,
            "override": None
            if o is None
            else {
                "state": "open" if o.open else "closed",
                "until": o.until.isoformat(),
                "label": o.label,
                "set_by": o.set_by,
            },
        }


def view(
    flow: LoadedFlow, name: str, cal: Calendar, overrides: OverrideStore, now: datetime
) -> CalendarView:
    override = overrides.get(calendar_key(flow.name, name), now)
    state = cal.state_at(now, override)
    return CalendarView(
        flow=flow.name,
        calendar=name,
        timezone=flow.tz.key,
        open=state.open,
        source=str(state.source),
        reason=state.reason,
        label=state.label,
        until=state.until,
        override=override if state.source is Source.OVERRIDE else None,
    )


def calendar_states(flows: FlowSet, overrides: OverrideStore, now: datetime) -> list[CalendarView]:
    """Every calendar of every flow at aware ``now``, sorted by flow then calendar."""
    return [
        view(flow, name, cal, overrides, now)
        for _, flow in sorted(flows.flows.items())
        for name, cal in sorted(flow.calendars.items())
    ]


def find(flows: FlowSet, flow: str, calendar: str) -> tuple[LoadedFlow, Calendar] | None:
    f = flows.flows.get(flow)
    cal = f.calendars.get(calendar) if f else None
    return None if f is None or cal is None else (f, cal)


def parse_override(body: Any, flow: LoadedFlow, now: datetime, who: str) -> Override:
    """An ``Override`` from ``{"state": "closed"|"open", "until": "...", "label": ...}``.

    ``until`` is ISO 8601; without an offset it is wall-clock time in the flow's time zone
    (DST rules of ``callflow.schedule.localtime``).  It must lie in the future, at most
    ``MAX_OVERRIDE`` ahead.
    """
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object: {"state": "closed", "until": "..."}')
    unknown = sorted(set(body) - {"state", "until", "label"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)} (known: state, until, label)")
    state = body.get("state")
    if state not in ("open", "closed"):
        raise BadRequest('"state" must be "open" or "closed"')
    raw = body.get("until")
    if not isinstance(raw, str) or not raw.strip():
        raise BadRequest(f'"until" is required: local time in {flow.tz.key}, e.g. 2026-12-28T08:00')
    try:
        wall = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise BadRequest(f'"until": not a date and time: {raw!r} (e.g. 2026-12-28T08:00)') from None
    try:
        until = localize(wall, flow.tz)
    except (OverflowError, ValueError):  # e.g. year 1: no time zone offset applies
        raise BadRequest(f'"until": out of range: {raw!r} (e.g. 2026-12-28T08:00)') from None
    if until <= now:
        raise BadRequest(f'"until" {until.isoformat()} is not in the future')
    if until - now > MAX_OVERRIDE:
        raise BadRequest(f'"until" is more than {MAX_OVERRIDE.days} days ahead')
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL):
        raise BadRequest(f'"label" must be a text of at most {MAX_LABEL} characters')
    return Override(open=state == "open", until=until, label=label or None, set_by=who)


__all__ = [
    "MAX_OVERRIDE",
    "BadRequest",
    "CalendarView",
    "calendar_key",
    "calendar_states",
    "find",
    "parse_override",
    "view",
]
