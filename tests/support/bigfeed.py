"""A big calendar feed, generated: a practice's main Google Agenda (appointments over
years, a few all-day absences, daily recurring slots with exceptions), the kind that
took seconds to parse and expand."""

from __future__ import annotations

from datetime import date, datetime, timedelta

VTIMEZONE = """BEGIN:VTIMEZONE\r
TZID:Europe/Paris\r
X-LIC-LOCATION:Europe/Paris\r
BEGIN:DAYLIGHT\r
TZOFFSETFROM:+0100\r
TZOFFSETTO:+0200\r
TZNAME:CEST\r
DTSTART:19700329T020000\r
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r
END:DAYLIGHT\r
BEGIN:STANDARD\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
TZNAME:CET\r
DTSTART:19701025T030000\r
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r
END:STANDARD\r
END:VTIMEZONE\r
"""


def big_feed(events: int = 3000, rules: int = 20, first: date = date(2025, 1, 6)) -> bytes:
    """``events`` single events (one in ten all-day, the others timed in Paris) spread
    over the days from ``first``, and ``rules`` daily RRULEs with an EXDATE each."""
    out = [
        "BEGIN:VCALENDAR\r\nPRODID:-//Google Inc//Google Calendar 70.9054//EN\r\n",
        "VERSION:2.0\r\nCALSCALE:GREGORIAN\r\nX-WR-CALNAME:Agenda du cabinet\r\n",
        "X-WR-TIMEZONE:Europe/Paris\r\n",
        VTIMEZONE,
    ]
    stamp = "DTSTAMP:20261201T080000Z\r\n"
    for i in range(events):
        day = first + timedelta(days=i // 4)
        if i % 10 == 0:
            when = f"DTSTART;VALUE=DATE:{day:%Y%m%d}\r\n"
            when += f"DTEND;VALUE=DATE:{day + timedelta(days=1):%Y%m%d}\r\n"
        else:
            start = datetime.combine(day, datetime.min.time()) + timedelta(hours=8 + i % 4 * 2)
            when = f"DTSTART;TZID=Europe/Paris:{start:%Y%m%dT%H%M%S}\r\n"
            when += f"DTEND;TZID=Europe/Paris:{start + timedelta(hours=1):%Y%m%dT%H%M%S}\r\n"
        out.append(
            f"BEGIN:VEVENT\r\n{when}{stamp}UID:event-{i}@cabinet.example.org\r\n"
            f"SUMMARY:Rendez-vous {i}\r\nEND:VEVENT\r\n"
        )
    for r in range(rules):
        start = datetime.combine(first, datetime.min.time()) + timedelta(hours=7, minutes=r)
        skip = start + timedelta(days=7 + r)
        out.append(
            f"BEGIN:VEVENT\r\nDTSTART;TZID=Europe/Paris:{start:%Y%m%dT%H%M%S}\r\n"
            f"DTEND;TZID=Europe/Paris:{start + timedelta(minutes=30):%Y%m%dT%H%M%S}\r\n"
            f"RRULE:FREQ=DAILY\r\nEXDATE;TZID=Europe/Paris:{skip:%Y%m%dT%H%M%S}\r\n"
            f"{stamp}UID:rule-{r}@cabinet.example.org\r\nSUMMARY:Creneau {r}\r\nEND:VEVENT\r\n"
        )
    out.append("END:VCALENDAR\r\n")
    return "".join(out).encode()
