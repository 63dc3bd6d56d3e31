"""Calendars of a flow: weekly hours, public holidays, closures, openings, overrides.

Pure functions of a given datetime; see :mod:`callflow.schedule.calendar` for precedence
and :mod:`callflow.schedule.localtime` for the DST rules.
"""

from callflow.schedule.calendar import (
    HORIZON,
    Calendar,
    CalendarState,
    Interval,
    Override,
    OverrideStore,
    Source,
    timeline,
)
from callflow.schedule.ical import FeedBook, FeedError, FeedEvent, ParsedFeed, parse_feed
from callflow.schedule.localtime import localize
from callflow.schedule.render import format_timeline
from callflow.schedule.spec import (
    CalendarSpec,
    HolidaySpec,
    PeriodSpec,
    TimeRange,
    parse_days,
    parse_time_range,
    parse_timezone,
)

__all__ = [
    "HORIZON",
    "Calendar",
    "CalendarSpec",
    "CalendarState",
    "FeedBook",
    "FeedError",
    "FeedEvent",
    "HolidaySpec",
    "Interval",
    "Override",
    "OverrideStore",
    "ParsedFeed",
    "PeriodSpec",
    "Source",
    "TimeRange",
    "format_timeline",
    "localize",
    "parse_days",
    "parse_feed",
    "parse_time_range",
    "parse_timezone",
    "timeline",
]
