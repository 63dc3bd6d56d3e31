"""The ``calendars:`` section of a flow file, validated.

The flow's YAML loader hands every scalar over as ``str``, so each field here parses
strings; ``date``/``datetime`` objects are accepted too for programmatic use.  Errors are
raised so that pydantic's ``loc`` points at the offending YAML node: a bad day key reports
``('weekly', 'satx')``, a bad range ``('weekly', 'sat', 0)``, a bad bound
``('closed', 0, 'to')``.  The flow loader turns that ``loc`` into ``file:line:col``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from functools import cache
from typing import Annotated, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE_HELP = "expected 'HH:MM-HH:MM'"
_DAY_HELP = "expected mon, tue, wed, thu, fri, sat, sun, a range 'mon-fri' or a list 'mon,wed,fri'"


class TimeRange(NamedTuple):
    """Minutes since local midnight; ``end <= start`` means the range crosses midnight."""

    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


_RANGE = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")


def parse_time_range(text: str) -> TimeRange:
    """Parse ``'08:00-12:30'``; ``24:00`` may end a range; start after end crosses midnight."""
    m = _RANGE.fullmatch(text.replace(" ", ""))
    if m is None:
        raise ValueError(f"invalid time range {text!r}: {_RANGE_HELP}, e.g. '08:00-12:30'")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    why = None
    if h1 > 24 or h2 > 24:
        why = "hours must be 00-24"
    elif m1 > 59 or m2 > 59:
        why = "minutes must be 00-59"
    elif (h1 == 24 and m1) or (h2 == 24 and m2):
        why = "24:00 is the latest time"
    elif h1 == 24:
        why = "24:00 can only end a range"
    elif (h1, m1) == (h2, m2):
        raise ValueError(
            f"invalid time range {text!r}: empty (start equals end); "
            "use '00:00-24:00' for a whole day"
        )
    if why is not None:
        raise ValueError(f"invalid time range {text!r}: {why}, {_RANGE_HELP}")
    # "20:00-00:00" and "20:00-24:00" mean the same; keep 0 so it reads as crossing midnight.
    return TimeRange(h1 * 60 + m1, h2 * 60 + m2)


def parse_days(key: str) -> tuple[int, ...]:
    """Weekday numbers (Monday=0) of a key: ``sat``, ``mon-fri``, ``mon,wed,fri``, ``fri-mon``.

    A range wraps around the week end (``fri-mon`` is Fri, Sat, Sun, Mon) because the week
    is a cycle; items may mix (``mon-wed,fri``).  Case and spaces are ignored.
    """
    days: list[int] = []
    for item in key.lower().replace(" ", "").split(","):
        bounds = item.split("-")
        if len(bounds) > 2 or not all(bounds):
            raise ValueError(f"invalid day key {key!r}: {_DAY_HELP}")
        for name in bounds:
            if name not in DAY_NAMES:
                raise ValueError(f"unknown day {name!r} in {key!r}: {_DAY_HELP}")
        first, last = DAY_NAMES.index(bounds[0]), DAY_NAMES.index(bounds[-1])
        days.extend((first + i) % 7 for i in range((last - first) % 7 + 1))
    return tuple(sorted(set(days)))


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ZoneInfo raises ValueError for malformed keys such as "../x" or "", and OSError
        # for a folder of the tz database such as "Europe".
        raise ValueError(f"unknown timezone {name!r}") from None


_FEED_SCHEMES = ("http", "https", "webcal", "file")


def _check_feed(text: str) -> str:
    """A feed is an http(s) / webcal URL or a file path (relative to the flow file)."""
    value = text.strip()
    if not value:
        raise ValueError("empty feed: give an https:// URL or a file path of an .ics file")
    scheme, sep, rest = value.partition("://")
    if sep and scheme.lower() not in _FEED_SCHEMES:
        raise ValueError(
            f"unsupported feed {scheme!r}: give an https://, http://, webcal:// URL or a file path"
        )
    if sep and scheme.lower() != "file" and not rest.split("/")[0]:
        raise ValueError(f"invalid feed URL {value!r}: no host")
    return value


def _check_range(text: str) -> str:
    parse_time_range(text)
    return text


def _error(loc: tuple[str | int, ...], value: Any, msg: str) -> InitErrorDetails:
    return InitErrorDetails(
        type="value_error", loc=loc, input=value, ctx={"error": ValueError(msg)}
    )


def _fail(title: str, errors: Sequence[InitErrorDetails]) -> ValidationError:
    """A ValidationError whose locations are relative to the field being validated.

    A plain ValueError from a validator is reported at the field itself; raising a
    ValidationError instead lets us point at a dict key or a sibling field.
    """
    return ValidationError.from_exception_data(title, list(errors))


def _shorten(items: Iterable[str], limit: int = 20) -> str:
    items = list(items)
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


@cache
def _countries() -> dict[str, list[str]]:
    return holidays.list_supported_countries(include_aliases=True)


class HolidaySpec(BaseModel):
    """Public holidays from the ``holidays`` package: ``{country: FR, subdivision: "57"}``."""

    model_config = ConfigDict(extra="forbid")

    country: str
    subdivision: str | None = None

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        code = value.strip().upper()
        if code not in _countries():
            examples = "FR, BE, CH, LU, DE, GB, US"
            raise ValueError(
                f"unknown country {value!r} for holidays: expected an ISO 3166 code "
                f"such as {examples} ({len(_countries())} supported)"
            )
        return code

    @model_validator(mode="after")
    def _known_subdivision(self) -> HolidaySpec:
        if self.subdivision is None:
            return self
        entity = holidays.country_holidays(self.country, years=())
        codes: list[str] = list(entity.subdivisions)
        aliases: dict[str, str] = dict(entity.subdivisions_aliases)
        wanted = self.subdivision.strip()
        for name, canonical in [*((c, c) for c in codes), *aliases.items()]:
            if wanted.casefold() == name.casefold():
                self.subdivision = canonical
                return self
        if codes:
            hint = f"valid: {_shorten(codes)}"
        else:
            hint = f"{self.country} has no subdivisions; remove 'subdivision'"
        msg = f"unknown subdivision {self.subdivision!r} for {self.country}; {hint}"
        raise _fail("HolidaySpec", [_error(("subdivision",), self.subdivision, msg)])


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?")
_DATE_HELP = "expected 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM' (local time)"


# A calendar concerns the practice's life: far-off years are typos, and computing with them
# (a day after 9999-12-31) would overflow.
_YEARS = range(1900, 3000)


def _parse_bound(value: object) -> date | datetime:
    bound = _parse_bound_any(value)
    if bound.year not in _YEARS:
        raise ValueError(f"invalid date {value!r}: the year must be between 1900 and 2999")
    return bound


def _parse_bound_any(value: object) -> date | datetime:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError(f"{value} has a UTC offset; give local time, {_DATE_HELP}")
        return value
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError(f"invalid date {value!r}: {_DATE_HELP}")
    text = value.strip()
    try:
        if _DATE.fullmatch(text):
            return date.fromisoformat(text)
        if _DATETIME.fullmatch(text):
            return datetime.fromisoformat(text)
    except ValueError as exc:  # e.g. "month must be in 1..12"
        raise ValueError(f"invalid date {value!r}: {exc}; {_DATE_HELP}") from None
    raise ValueError(f"invalid date {value!r}: {_DATE_HELP}")


def _show(bound: date | datetime) -> str:
    return f"{bound:%Y-%m-%d %H:%M}" if isinstance(bound, datetime) else bound.isoformat()


def period_bounds(start: date | datetime, end: date | datetime) -> tuple[datetime, datetime]:
    """Naive local ``[start, end)`` of a period: a date ``from`` starts that day, a date
    ``to`` includes its whole day."""
    lo = start if isinstance(start, datetime) else datetime.combine(start, datetime.min.time())
    if isinstance(end, datetime):
        return lo, end
    return lo, datetime.combine(end + timedelta(days=1), datetime.min.time())


class PeriodSpec(BaseModel):
    """A dated closure or opening; date bounds are whole days, datetimes are ``[from, to)``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: date | datetime = Field(alias="from")
    to: date | datetime
    label: str | None = None

    @field_validator("from_", "to", mode="plain")
    @classmethod
    def _bound(cls, value: object) -> date | datetime:
        return _parse_bound(value)

    @model_validator(mode="after")
    def _ordered(self) -> PeriodSpec:
        lo, hi = period_bounds(self.from_, self.to)
        if hi <= lo:
            start, end = _show(self.from_), _show(self.to)
            if hi < lo:
                msg = f"'to' ({end}) is before 'from' ({start})"
            else:
                msg = f"empty period: 'to' equals 'from' ({start})"
            raise _fail("PeriodSpec", [_error(("to",), str(self.to), msg)])
        return self


class CalendarSpec(BaseModel):
    """One entry of ``calendars:``: weekly hours, holidays, closures and openings."""

    model_config = ConfigDict(extra="forbid")

    weekly: dict[str, list[Annotated[str, AfterValidator(_check_range)]]] = {}
    holidays: HolidaySpec | None = None
    closed: list[PeriodSpec] = []
    open: list[PeriodSpec] = []
    # iCal feeds (URL or file) whose events are closures / exceptional openings.
    closed_feeds: list[Annotated[str, AfterValidator(_check_feed)]] = []
    open_feeds: list[Annotated[str, AfterValidator(_check_feed)]] = []

    @field_validator("weekly", mode="wrap")
    @classmethod
    def _day_keys(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> dict[str, list[str]]:
        # Keys are checked here rather than with a key validator so that the error's loc is
        # ('weekly', 'satx') (the key's node) instead of pydantic's ('weekly', 'satx', '[key]').
        errors: list[InitErrorDetails] = []
        if isinstance(value, dict):
            for key in value:
                try:
                    parse_days(str(key))
                except ValueError as exc:
                    errors.append(_error((str(key),), key, str(exc)))
        try:
            result: dict[str, list[str]] = handler(value)
        except ValidationError as exc:
            if not errors:
                raise
            # Keep the other errors (bad ranges, wrong types) as they were reported.
            for err in exc.errors():
                detail = InitErrorDetails(type=err["type"], loc=err["loc"], input=err["input"])
                if "ctx" in err:
                    detail["ctx"] = err["ctx"]
                errors.append(detail)
        if errors:
            raise _fail("CalendarSpec", errors)
        return result
