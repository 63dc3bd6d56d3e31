"""Text rendering of a timeline, for ``callflow calendar FILE --from DATE --days N``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo

from callflow.schedule.calendar import Interval
from callflow.schedule.localtime import day_start

# Fixed English names: strftime("%a") would follow the process locale.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def format_timeline(intervals: Iterable[Interval]) -> str:
    """One line per interval and local day, e.g.

    ``Thu 2026-12-24  08:00-12:00  open   (weekly: thu 08:00-12:30)``

    An interval spanning midnight is cut at each local midnight (shown as ``24:00``), and
    a day on which the UTC offset changes gets a note, since its wall times skip or
    repeat an hour.
    """
    lines: list[str] = []
    noted: set[str] = set()
    for iv in intervals:
        tz = iv.start.tzinfo
        if tz is None:
            raise ValueError("format_timeline needs aware intervals")
        t, end = iv.start.astimezone(UTC), iv.end.astimezone(UTC)
        while t < end:
            local = t.astimezone(tz)
            day = local.date()
            midnight = day_start(day + timedelta(days=1), tz)
            piece_end = min(end, max(midnight, t + timedelta(minutes=1)))
            prefix = f"{_DAYS[day.weekday()]} {day.isoformat()}"
            if prefix not in noted:
                noted.add(prefix)
                note = _offset_note(day_start(day, tz), midnight, tz)
                if note:
                    lines.append(f"{prefix}  {note}")
            stop = "24:00" if piece_end == midnight else f"{piece_end.astimezone(tz):%H:%M}"
            word = "open" if iv.state.open else "closed"
            lines.append(f"{prefix}  {local:%H:%M}-{stop}  {word:<6} ({iv.state.reason})")
            t = piece_end
    return "\n".join(lines)


def _offset_note(start: datetime, end: datetime, tz: tzinfo) -> str | None:
    """Note for the local day ``[start, end)`` (UTC) if its UTC offset changes.

    The offset is taken just before the day starts: where the change happens at
    midnight (America/Santiago), the day itself starts after the change.
    """
    before = (start - timedelta(seconds=1)).astimezone(tz).utcoffset()
    after = (end - timedelta(seconds=1)).astimezone(tz).utcoffset()
    if before is None or after is None or before == after:
        return None
    return f"note: UTC offset changes from {_fmt(before)} to {_fmt(after)}"


def _fmt(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
