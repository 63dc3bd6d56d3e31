"""Wall-clock local time to instants, defined for every wall time including DST edges.

Calendars are written in wall-clock time of the flow's timezone.  Two wall times need a
rule because they are not exactly one instant:

* a wall time inside the spring gap (02:30 on 2026-03-29 in Europe/Paris never happens)
  means the first instant after the gap (03:00 CEST), so a range starting or ending in
  the gap starts or ends when the clocks jump;
* an ambiguous wall time in the autumn fold (02:30 on 2026-10-25 happens twice) means its
  first occurrence (CEST), unless the naive datetime given has ``fold=1``.

Internally everything is compared in UTC: Python compares two aware datetimes that share a
tzinfo by wall time, ignoring ``fold``, which is wrong in the autumn fold.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, tzinfo


def wall_to_utc(wall: datetime, tz: tzinfo) -> datetime:
    """The UTC instant of naive local ``wall`` in ``tz`` (rules in the module docstring)."""
    naive = wall.replace(tzinfo=None)
    instant = naive.replace(tzinfo=tz).astimezone(UTC)
    if _wall(instant, tz) == naive:
        return instant
    # In a gap: the two folds give instants on either side of the transition; search
    # for the first second whose wall time is at or past `naive` (transitions fall on
    # whole seconds in tzdata).
    a = naive.replace(tzinfo=tz, fold=0).astimezone(UTC).timestamp()
    b = naive.replace(tzinfo=tz, fold=1).astimezone(UTC).timestamp()
    lo, hi = math.floor(min(a, b)), math.ceil(max(a, b))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(datetime.fromtimestamp(mid, UTC), tz) >= naive:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def localize(wall: datetime, tz: tzinfo) -> datetime:
    """Aware datetime in ``tz`` for naive local ``wall``; aware input is just converted."""
    if wall.tzinfo is not None:
        return wall.astimezone(tz)
    return wall_to_utc(wall, tz).astimezone(tz)


def day_start(day: date, tz: tzinfo) -> datetime:
    """UTC instant at which local ``day`` begins."""
    return wall_to_utc(datetime.combine(day, time()), tz)


def to_utc(at: datetime, tz: tzinfo) -> datetime:
    """``at`` as a UTC instant; a naive ``at`` is local wall time in ``tz``."""
    if at.tzinfo is None:
        return wall_to_utc(at, tz)
    return at.astimezone(UTC)
