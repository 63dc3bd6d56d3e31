"""``callflow report``: what the phone line did over a period, from the call log.

Definitions (every figure is over the calls that *started* in ``[from, to)``, and the
callback requests *created* in it, optionally for one flow):

* **calls**: every call recorded, whatever its end; ``unfinished`` counts those with no end
  recorded (the daemon was killed during the call).
* **missed-call rate** = (abandoned + failed + lost) / calls.  *Abandoned*: the caller hung up
  before reaching anyone (however short the call); *failed*: the flow reached no one and
  not even its fallback.  A callback request, a voicemail or a deliberate hang-up (e.g. a
  "we are closed, call 15" message) is an answer of the practice, not a missed call; but
  a caller sent to voicemail who left no message is logged *abandoned* once the call's
  CDR says so (``cdr_import.follow_voicemails``).
  ``None`` when there are no calls.
* **time to answer** = answered - started, for the calls that ended *answered*,
  *forwarded* or *emergency* and have an answer time: average and p90.  p90 is the
  nearest-rank 90th percentile: the smallest time such that at least 90 % of the times are
  less or equal (``sorted[ceil(0.9 n) - 1]``).
* **response time (staff)** = the time to answer of the calls answered by the practice's
  staff only (outcome *answered*), without menu time: the ring time of their dial /
  forward / escalate steps up to the answer (``response_time``; the quality report's
  definition, :mod:`callflow.store.quality`).
* **callback completion rate** = done / requested (pending and cancelled requests count
  as not completed); **callback delay** = completed - created for the done ones: average
  and p90.
* **calls by tier**: the triage tier of the call's escalation (``none`` without one).
* **forwarding**: calls that ended *forwarded* (to an outside number), by destination,
  and their share of all calls.
* **without the daemon**, shown apart: *fallback* calls the dialplan fallback handled alone
  while the daemon was down (imported from Asterisk's CDRs), *shed* calls the overloaded
  daemon handed to the dialplan, and the calls a crash left open: *recovered* (rescued, or
  taken by the fallback) and *lost*; with their share of all calls.
* **after the dialplan fallback**: where the fallback left the calls the daemon did not
  carry and the fallback took (outcomes ``fallback``, ``shed``, ``recovered``), from
  Asterisk's CDRs (``calls.fallback_fate``): the secretariat or the outside secretariat
  answered, the voicemail took it, nobody (rung out), the caller hung up waiting
  (abandoned), or the PBX cut it; *not known* counts the ``fallback`` and ``shed`` calls
  without a fate (no ``[cdr] file``, a CDR not read yet or read before this release, or a
  trace of a dialplan of the site's own).  *Reached nobody* = nobody + abandoned + cut:
  patients who called and reached no one, whom the missed-call rate does not count (their
  outcome is not a missed one).  A call handed over mid-flow ends ``failed``, which the
  missed-call rate counts already: its fate is in the call log, not here.
* **patient satisfaction**: the survey steps' ratings (:mod:`callflow.store.satisfaction`):
  mean rating out of the survey's scale, ratings, response rate = ratings / surveys asked.
* **volume**: calls by weekday and hour of their start in ``--timezone`` (the flows' local
  time, default Europe/Paris, DST included).
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..flow.events import MISSED as MISSED_OUTCOMES
from ..flow.events import OutcomeKind, StepKind
from .cdr import FallbackFate
from .models import FALLBACK_FATES, OUTCOMES, Call, CallbackRequestRow, CallStep
from .report_words import FR, fate_word, outcome, weekday, words
from .satisfaction import answers_of, satisfaction, survey_steps

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MISSED = tuple(sorted(str(o) for o in MISSED_OUTCOMES))  # one definition: flow.events
REACHED = ("answered", "forwarded", "emergency")
# Calls the daemon did not carry to their end, shown apart in the report.
WITHOUT_DAEMON = ("fallback", "shed", "recovered", "lost")
# The calls the fallback took while the daemon did not carry them (not missed calls by their
# outcome); of the first two, every one went there, so its fate is known once its CDR is.
HANDED = ("fallback", "shed")
FOLLOWED = (*HANDED, "recovered")
NOBODY = tuple(str(f) for f in (FallbackFate.NOBODY, FallbackFate.ABANDONED, FallbackFate.CUT))
STAFF = str(OutcomeKind.ANSWERED)  # a person of the practice or an on-call doctor
RINGING = (str(StepKind.DIAL), str(StepKind.FORWARD), str(StepKind.ESCALATE))


def reached_nobody(calls: Iterable[Any]) -> int:
    """How many of ``calls`` (rows with ``outcome`` and ``fallback_fate``) the fallback took
    and left with nobody: the patients the missed-call rate does not count."""
    return sum(1 for c in calls if c.outcome in FOLLOWED and c.fallback_fate in NOBODY)


def response_time(answered: datetime, steps: Iterable[tuple[datetime, float]]) -> float | None:
    """Seconds spent being rung for before ``answered``: ``steps`` are the ringing steps'
    (end, duration); each counts from its start to its end or the answer, whichever is
    first (a step's record ends after the conversation).  None: no ringing step."""
    total, found = 0.0, False
    for end, duration in steps:
        start = end - timedelta(seconds=duration)
        if start > answered:
            continue
        found = True
        total += (min(end, answered) - start).total_seconds()
    return total if found else None


def ringing_steps(calls: Select[*tuple[Any, ...]]) -> Select[str, datetime, float]:
    """(call id, end, duration) of the ringing steps of the staff-answered calls among
    ``calls`` (a select of calls with their filters)."""
    ids = calls.with_only_columns(Call.id).where(Call.outcome == STAFF).scalar_subquery()
    return select(CallStep.call_id, CallStep.at, CallStep.duration).where(
        CallStep.call_id.in_(ids), CallStep.kind.in_(RINGING)
    )


async def staff_response_times(
    conn: AsyncConnection, calls: Select[*tuple[Any, ...]], rows: Iterable[Any]
) -> dict[str, float]:
    """Response time of each staff-answered call of ``rows`` (with id, answered, outcome)."""
    rings: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for call_id, at, duration in (await conn.execute(ringing_steps(calls))).all():
        rings[call_id].append((at, duration))
    out: dict[str, float] = {}
    for c in rows:
        if c.outcome == STAFF and c.answered is not None:
            t = response_time(c.answered, rings.get(c.id, ()))
            if t is not None:
                out[c.id] = t
    return out


def p90(values: Sequence[float]) -> float | None:
    """Nearest-rank 90th percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def average(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _ratio(n: int, d: int) -> float | None:
    return n / d if d else None


@dataclass(frozen=True)
class Period:
    start: datetime  # aware, inclusive
    end: datetime  # aware, exclusive
    tz: ZoneInfo
    flow: str | None = None


async def build_report(engine: AsyncEngine, period: Period) -> dict[str, Any]:
    """The report's figures, JSON-ready (see the module's definitions)."""
    calls_q = select(
        Call.id,
        Call.started,
        Call.answered,
        Call.outcome,
        Call.tier,
        Call.destination,
        Call.node,
        Call.fallback_fate,
    ).where(Call.started >= period.start, Call.started < period.end)
    cb_q = select(
        CallbackRequestRow.status, CallbackRequestRow.created, CallbackRequestRow.completed
    ).where(CallbackRequestRow.created >= period.start, CallbackRequestRow.created < period.end)
    if period.flow is not None:
        calls_q = calls_q.where(Call.flow == period.flow)
        cb_q = cb_q.where(CallbackRequestRow.flow == period.flow)
    async with engine.connect() as conn:
        calls = (await conn.execute(calls_q)).all()
        callbacks = (await conn.execute(cb_q)).all()
        staff = list((await staff_response_times(conn, calls_q, calls)).values())
        surveys = answers_of((await conn.execute(survey_steps(calls_q))).all())

    total = len(calls)
    outcomes = Counter(c.outcome for c in calls)
    missed = sum(outcomes[o] for o in MISSED)
    waits = [
        (c.answered - c.started).total_seconds()
        for c in calls
        if c.outcome in REACHED and c.answered is not None
    ]
    tiers = Counter("none" if c.tier is None else str(c.tier) for c in calls)
    nodes = Counter(c.node or "-" for c in calls)  # "-": logged before nodes were
    forwarded = Counter(c.destination or "?" for c in calls if c.outcome == "forwarded")
    grid = [[0] * 24 for _ in WEEKDAYS]
    for c in calls:
        local = c.started.astimezone(period.tz)
        grid[local.weekday()][local.hour] += 1

    fates = Counter(
        c.fallback_fate for c in calls if c.outcome in FOLLOWED and c.fallback_fate is not None
    )
    unknown = sum(1 for c in calls if c.outcome in HANDED and c.fallback_fate is None)

    statuses = Counter(cb.status for cb in callbacks)
    delays = [
        (cb.completed - cb.created).total_seconds()
        for cb in callbacks
        if cb.status == "done" and cb.completed is not None
    ]
    return {
        "period": {
            "from": period.start.isoformat(),
            "to": period.end.isoformat(),
            "timezone": str(period.tz),
            "flow": period.flow,
        },
        "calls": {
            "total": total,
            "unfinished": outcomes[None],
            "by_outcome": {o: outcomes[o] for o in OUTCOMES},
            "by_node": dict(sorted(nodes.items())),
        },
        "missed": {"count": missed, "rate": _ratio(missed, total)},
        "without_daemon": {
            **{o: outcomes[o] for o in WITHOUT_DAEMON},
            "rate": _ratio(sum(outcomes[o] for o in WITHOUT_DAEMON), total),
        },
        "after_fallback": {
            **{f: fates[f] for f in FALLBACK_FATES},
            "not_known": unknown,
            "reached_nobody": reached_nobody(calls),
        },
        "time_to_answer": {
            "calls": len(waits),
            "average_s": average(waits),
            "p90_s": p90(waits),
        },
        "response_time": {"calls": len(staff), "average_s": average(staff), "p90_s": p90(staff)},
        "callbacks": {
            "requested": len(callbacks),
            "done": statuses["done"],
            "pending": statuses["pending"],
            "cancelled": statuses["cancelled"],
            "completion_rate": _ratio(statuses["done"], len(callbacks)),
            "delay_average_s": average(delays),
            "delay_p90_s": p90(delays),
        },
        "satisfaction": satisfaction(surveys),
        "tiers": dict(sorted(tiers.items())),
        "forwarding": {
            "calls": sum(forwarded.values()),
            "rate": _ratio(sum(forwarded.values()), total),
            "by_destination": dict(sorted(forwarded.items())),
        },
        "volume": {"weekdays": list(WEEKDAYS), "hours": list(range(24)), "calls": grid},
    }


# -- rendering --------------------------------------------------------------------------


def _pct(x: float | None, w: dict[str, str]) -> str:
    if x is None:
        return w["na"]
    text = f"{100 * x:.1f} %"
    return text.replace(".", ",") if w is FR else text


def _secs(x: float | None, w: dict[str, str]) -> str:
    if x is None:
        return w["na"]
    if x < 60:
        text = f"{x:.1f} s"
        return text.replace(".", ",") if w is FR else text
    if x < 3600:
        return f"{int(x // 60)} min {int(x % 60):02d} s"
    return f"{int(x // 3600)} h {int(x % 3600 // 60):02d} min"


def _lines(r: dict[str, Any], language: str) -> list[tuple[str, str]]:
    w = words(language)
    c, cb, t, f = r["calls"], r["callbacks"], r["time_to_answer"], r["forwarding"]
    wd = r["without_daemon"]
    rows = [
        (w["calls"], str(c["total"])),
        *((f"  {outcome(o, language)}", str(n)) for o, n in c["by_outcome"].items() if n),
    ]
    if c["unfinished"]:
        rows.append((f"  {w['unfinished']}", str(c["unfinished"])))
    by_node = c.get("by_node", {})
    if len(by_node) > 1:  # several nodes share the call log: each one's calls
        rows += [(f"  {w['on_node'].format(name=n)}", str(k)) for n, k in by_node.items()]
    rows += [
        (w["missed"], f"{_pct(r['missed']['rate'], w)} ({r['missed']['count']})"),
        (w["without"], f"{_pct(wd['rate'], w)} ({sum(wd[o] for o in WITHOUT_DAEMON)})"),
        (f"  {w['without_fallback']}", str(wd["fallback"])),
        (f"  {w['without_shed']}", str(wd["shed"])),
        (f"  {w['without_crash']}", f"{wd['recovered']} / {wd['lost']}"),
        *_fallback_lines(r["after_fallback"], language),
        (w["tta_average"].format(n=t["calls"]), _secs(t["average_s"], w)),
        (w["tta_p90"], _secs(t["p90_s"], w)),
        (
            w["rt_average"].format(n=r["response_time"]["calls"]),
            _secs(r["response_time"]["average_s"], w),
        ),
        (w["rt_p90"], _secs(r["response_time"]["p90_s"], w)),
        (w["cb_requested"], str(cb["requested"])),
        (f"  {w['cb_split']}", f"{cb['done']} / {cb['pending']} / {cb['cancelled']}"),
        (w["cb_rate"], _pct(cb["completion_rate"], w)),
        (w["cb_delay_average"], _secs(cb["delay_average_s"], w)),
        (w["cb_delay_p90"], _secs(cb["delay_p90_s"], w)),
        (w["forwarded"], f"{f['calls']} ({_pct(f['rate'], w)})"),
        *((f"  {w['to'].format(destination=d)}", str(n)) for d, n in f["by_destination"].items()),
        (w["by_tier"], ", ".join(f"{k}: {v}" for k, v in r["tiers"].items()) or "-"),
        *_satisfaction_lines(r["satisfaction"], w),
    ]
    return rows


def _fallback_lines(fates: dict[str, int], language: str) -> list[tuple[str, str]]:
    w = words(language)
    if not any(fates.values()):
        return []  # no call went to the fallback
    split = ", ".join(
        f"{fate_word(f, language)} {fates[f]}" for f in (*FALLBACK_FATES, "not_known") if fates[f]
    )
    return [
        (w["after_fallback"], split),
        (f"  {w['reached_nobody']}", str(fates["reached_nobody"])),
    ]


def _satisfaction_lines(s: dict[str, Any], w: dict[str, str]) -> list[tuple[str, str]]:
    if s["status"] == "not collected":
        return [(w["satisfaction"], w["not_collected"])]
    average = w["na"]
    if s["average"] is not None:
        average = f"{s['average']:.1f} / {s['scale']}"
        average = average.replace(".", ",") if w is FR else average
    return [
        (w["satisfaction_average"].format(n=s["ratings"]), average),
        (w["survey_rate"], f"{_pct(s['response_rate'], w)} ({s['ratings']}/{s['asked']})"),
    ]


def _title(r: dict[str, Any], language: str) -> str:
    w = words(language)
    p = r["period"]
    flow = w["flow"].format(name=p["flow"]) if p["flow"] else ""
    return w["title"].format(start=p["from"], end=p["to"], tz=p["timezone"], flow=flow)


def render_text(r: dict[str, Any], language: str = "en") -> str:
    rows = _lines(r, language)
    width = max(len(k) for k, _ in rows)
    out = [_title(r, language), ""]
    out += [f"{k.ljust(width)}  {v}" for k, v in rows]
    out += ["", words(language)["heatmap"].format(tz=r["period"]["timezone"])]
    out.append("     " + "".join(f"{h:>4}" for h in range(24)) + "   total")
    for day, counts in zip(r["volume"]["weekdays"], r["volume"]["calls"], strict=True):
        cells = "".join(f"{n:>4}" if n else "   ." for n in counts)
        out.append(f"{weekday(day, language):<5}{cells}  {sum(counts):>6}")
    return "\n".join(out) + "\n"


def render_json(r: dict[str, Any], language: str = "en") -> str:
    """The data, whatever the language (keys and values are for programs)."""
    return json.dumps(r, indent=2, ensure_ascii=False) + "\n"


def heatmap_svg(r: dict[str, Any], language: str = "en") -> str:
    """The weekday × hour volume as an inline SVG heat map (no external assets)."""
    w = words(language)
    grid: list[list[int]] = r["volume"]["calls"]
    days = [weekday(d, language) for d in r["volume"]["weekdays"]]
    peak = max((n for row in grid for n in row), default=0)
    cell, left, top = 28, 44, 22
    width, height = left + 24 * cell + 4, top + len(days) * cell + 4
    label = html.escape(w["heatmap"].format(tz=r["period"]["timezone"]))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}" '
        'font-family="sans-serif" font-size="11">'
    ]
    for h in range(24):
        x = left + h * cell + cell / 2
        parts.append(f'<text x="{x:g}" y="{top - 7}" text-anchor="middle">{h}</text>')
    for d, (day, row) in enumerate(zip(days, grid, strict=True)):
        y = top + d * cell
        parts.append(
            f'<text x="{left - 6}" y="{y + cell / 2 + 4:g}" text-anchor="end">{day}</text>'
        )
        for h, n in enumerate(row):
            share = n / peak if peak else 0.0
            # White (no calls) to deep blue (the busiest hour).
            red, green = round(255 - 215 * share), round(255 - 165 * share)
            title = html.escape(w["cell"].format(day=day, hour=h, n=n))
            parts.append(
                f'<rect x="{left + h * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                f'fill="rgb({red},{green},255)" stroke="#ccc"><title>{title}</title></rect>'
            )
            if n:
                colour = "#fff" if share > 0.6 else "#000"
                parts.append(
                    f'<text x="{left + h * cell + (cell - 2) / 2:g}" y="{y + cell / 2 + 3:g}" '
                    f'text-anchor="middle" fill="{colour}">{n}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def render_html(r: dict[str, Any], language: str = "en") -> str:
    e = html.escape
    w = words(language)
    rows = "".join(
        f"<tr><th>{e(k.strip())}</th><td>{e(v)}</td></tr>" for k, v in _lines(r, language)
    )
    title = e(_title(r, language))
    return (
        f'<!DOCTYPE html>\n<html lang="{e(language)}"><head><meta charset="utf-8">'
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th{text-align:left;font-weight:normal;padding:2px 1.5em 2px 0}"
        "td{text-align:right;font-weight:bold}</style></head><body>"
        f"<h1>{title}</h1><table>{rows}</table>"
        f"<h2>{e(w['heatmap'].format(tz=r['period']['timezone']))}</h2>"
        f"{heatmap_svg(r, language)}"
        f"<p><small>{w['definitions']}</small></p>"
        "</body></html>\n"
    )


#: Each renderer takes the report and a language ("fr" or "en").
RENDERERS = {"text": render_text, "json": render_json, "html": render_html}

__all__ = [
    "RENDERERS",
    "Period",
    "average",
    "build_report",
    "heatmap_svg",
    "p90",
    "render_html",
    "render_json",
    "render_text",
]
