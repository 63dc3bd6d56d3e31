"""The monthly quality report for the practice's manager (``callflow report`` without
``--from``/``--to``): the indicators the practice reviews each month, for the month and
the month before it, for all flows and per flow, and per week of the month; in French.

The definitions (they are printed in the report too, see ``DEFINITIONS``):

* **missed-call rate** = calls whose outcome is a missed one (abandoned, failed, lost:
  ``flow.events.MISSED``, the metrics' definition) / calls started in the period.  A call
  put through to a person, the secretariat, the emergency line, voicemail or a callback
  request is not missed; one sent to voicemail that left no message is (its CDR says so:
  the call log then says abandoned or failed).
* **response time** counts only the calls *answered by the practice's staff* (outcome
  ``answered``: a person of the practice or an on-call doctor took the call); forwarded
  and emergency calls are left out.  It is the time the caller spent being rung for,
  from the call log's typed step records: for each ``dial``/``forward``/``escalate`` step
  that began before the answer, the time from its start (``at - duration``) to its end
  or to the answer (``calls.answered``, from the engine's ``CallAnswered``), whichever
  comes first, summed (``report.response_time``).  Menus, messages and other steps do
  not count.  A call answered
  with no such step recorded (none expected) is left out.
* **callback completion rate** = requests done / requests created in the period (pending
  and cancelled count as not done); **time to callback** = completed - created for the
  done ones: average and p90.
* **without the daemon**, shown apart: calls the dialplan fallback handled alone while
  the daemon was down (``fallback``, imported from Asterisk's CDRs), calls the overloaded
  daemon shed to the dialplan (``shed``), and calls a crash left open (``recovered``,
  ``lost``); their count and share of the calls (``report.WITHOUT_DAEMON``); and how many
  of the calls the fallback took (fallback, shed, recovered) reached nobody there (rung
  out, hung up while held or rung, or cut, from Asterisk's CDRs: ``report.reached_nobody``),
  patients the missed-call rate does not count.
* **patient satisfaction**: from the flows' ``survey`` steps (``store.satisfaction``):
  the mean rating out of the survey's scale, the number of ratings and the response rate
  (ratings / surveys asked).  A period with no survey asked says "not collected" rather
  than show a figure.

Weeks are Monday to Sunday in local time, cut at the month's bounds so that they add up
to the month.  p90 is the nearest-rank percentile of ``report.p90``.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..flow.events import MISSED as MISSED_OUTCOMES
from ..schedule.localtime import day_start
from .models import Call, CallbackRequestRow
from .report import (
    STAFF,
    WITHOUT_DAEMON,
    average,
    p90,
    reached_nobody,
    response_time,
    ringing_steps,
)
from .satisfaction import SurveyAnswer, answers_of, satisfaction, survey_steps

ALL = "*"  # the key of the figures over every flow
UNTAGGED = "-"  # the node of calls logged before nodes were (one node then)
MISSED = frozenset(str(o) for o in MISSED_OUTCOMES)

MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)

DEFINITIONS = {
    "missed": "appel manqué : l'appelant n'a joint ni une personne, ni la messagerie, ni une "
    "demande de rappel (issue abandoned, failed ou lost ; un appelant envoyé sur la "
    "messagerie qui n'y a pas laissé de message compte comme manqué) ; taux = appels "
    "manqués / appels.",
    "response_time": "temps de réponse : pour les seuls appels décrochés par l'équipe du "
    "cabinet (issue answered ; les appels transférés et d'urgence sont exclus), le temps "
    "passé à sonner dans les étapes dial, forward et escalate jusqu'au décroché ; le temps "
    "des menus et des messages n'est pas compté.",
    "callbacks": "rappels : taux de réalisation = demandes de rappel faites / demandes "
    "créées dans la période ; délai de rappel = fait le - créée le, pour les rappels faits.",
    "without_daemon": "sans le démon : appels pris par le repli du plan de numérotation "
    "d'Asterisk pendant un arrêt du démon (issue fallback, d'après les CDR d'Asterisk), "
    "délestés en surcharge (shed), laissés ouverts par une panne puis repris (recovered) "
    "ou perdus (lost) ; parmi les appels pris par le repli (fallback, shed, recovered), "
    "ceux qui n'y ont joint "
    "personne (sonnerie sans réponse, appelant qui a raccroché en attente, appel coupé), "
    "d'après les CDR d'Asterisk : le taux d'appels manqués ne les compte pas.",
    "satisfaction": "satisfaction des patients : note moyenne donnée par les appelants à "
    "l'enquête (étape survey) proposée quand leur interlocuteur a raccroché, sur l'échelle "
    "de l'enquête (notes d'échelles différentes ramenées sur 5) ; nombre de notes ; taux de "
    "réponse = notes / enquêtes proposées (l'appelant qui raccroche ou ne tape rien ne note "
    "pas) ; « non collectée » quand aucune enquête n'a été proposée.",
}


@dataclass(frozen=True)
class Span:
    """``[start, end)``, aware; ``label`` in French."""

    label: str
    start: datetime
    end: datetime


def month_span(year: int, month: int, tz: ZoneInfo) -> Span:
    first = date(year, month, 1)
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return Span(f"{MONTHS[month - 1]} {year}", _midnight(first, tz), _midnight(nxt, tz))


def previous_month(year: int, month: int) -> tuple[int, int]:
    return (year, month - 1) if month > 1 else (year - 1, 12)


def week_spans(month: Span, tz: ZoneInfo) -> list[Span]:
    """The Monday-to-Sunday weeks of ``month``, cut at its bounds."""
    spans: list[Span] = []
    day = month.start.astimezone(tz).date()
    last = (month.end.astimezone(tz) - timedelta(seconds=1)).date()
    while day <= last:
        monday = day - timedelta(days=day.weekday())
        stop = min(monday + timedelta(days=7), last + timedelta(days=1))
        label = f"semaine du {monday.day} {MONTHS[monday.month - 1]}"
        if monday != day:
            label += f" (à partir du {day.day} {MONTHS[day.month - 1]})"
        spans.append(Span(label, _midnight(day, tz), _midnight(stop, tz)))
        day = stop
    return spans


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    """The instant local ``day`` begins (where DST changes at midnight, its first instant)."""
    return day_start(day, tz).astimezone(tz)


@dataclass(frozen=True)
class _CallRow:
    id: str
    flow: str
    started: datetime
    answered: datetime | None
    outcome: str | None
    node: str | None
    fallback_fate: str | None


@dataclass(frozen=True)
class _CallbackRow:
    flow: str
    status: str
    created: datetime
    completed: datetime | None


async def build_quality(
    engine: AsyncEngine, year: int, month: int, tz: ZoneInfo, flow: str | None = None
) -> dict[str, Any]:
    """The month's indicators beside the previous month's, per flow and per week."""
    current = month_span(year, month, tz)
    before = month_span(*previous_month(year, month), tz)
    lo, hi = before.start, current.end
    calls_q = select(
        Call.id, Call.flow, Call.started, Call.answered, Call.outcome, Call.node, Call.fallback_fate
    ).where(Call.started >= lo, Call.started < hi)
    cb_q = select(
        CallbackRequestRow.flow,
        CallbackRequestRow.status,
        CallbackRequestRow.created,
        CallbackRequestRow.completed,
    ).where(CallbackRequestRow.created >= lo, CallbackRequestRow.created < hi)
    if flow is not None:
        calls_q = calls_q.where(Call.flow == flow)
        cb_q = cb_q.where(CallbackRequestRow.flow == flow)
    async with engine.connect() as conn:
        calls = [_CallRow(*row) for row in (await conn.execute(calls_q)).all()]
        step_rows = (await conn.execute(ringing_steps(calls_q))).all()
        callbacks = [_CallbackRow(*row) for row in (await conn.execute(cb_q)).all()]
        surveys = answers_of((await conn.execute(survey_steps(calls_q))).all())
    ringing: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for call_id, at, duration in step_rows:
        ringing[call_id].append((at, duration))

    flows = sorted({c.flow for c in calls} | {cb.flow for cb in callbacks})
    if flow is not None:
        flows = [flow]

    # The nodes (Asterisk + daemon) that took calls: one report covers them all.
    nodes = sorted({c.node or UNTAGGED for c in calls})

    def figures(span: Span) -> dict[str, Any]:
        out = {ALL: _indicators(span, calls, callbacks, ringing, surveys, nodes)}
        for name in flows:
            mine = [c for c in calls if c.flow == name]
            theirs = [cb for cb in callbacks if cb.flow == name]
            out[name] = _indicators(span, mine, theirs, ringing, surveys, nodes)
        return out

    return {
        "title": f"Rapport qualité de la ligne : {current.label}",
        "timezone": str(tz),
        "flow": flow,
        "flows": flows,
        "nodes": nodes,
        "months": [_span_json(s) | {"figures": figures(s)} for s in (current, before)],
        "weeks": [_span_json(s) | {"figures": figures(s)} for s in week_spans(current, tz)],
        "definitions": DEFINITIONS,
    }


def _span_json(span: Span) -> dict[str, Any]:
    return {"label": span.label, "from": span.start.isoformat(), "to": span.end.isoformat()}


def _indicators(
    span: Span,
    calls: Sequence[_CallRow],
    callbacks: Sequence[_CallbackRow],
    ringing: dict[str, list[tuple[datetime, float]]],
    surveys: Sequence[SurveyAnswer],
    nodes: Sequence[str],
) -> dict[str, Any]:
    mine = [c for c in calls if span.start <= c.started < span.end]
    ids = {c.id for c in mine}
    per_node = dict.fromkeys(nodes, 0)
    for c in mine:
        per_node[c.node or UNTAGGED] += 1
    missed = sum(1 for c in mine if c.outcome in MISSED)
    without = {o: sum(1 for c in mine if c.outcome == o) for o in WITHOUT_DAEMON}
    waits = [
        t
        for c in mine
        if c.outcome == STAFF and c.answered is not None
        if (t := response_time(c.answered, ringing.get(c.id, ()))) is not None
    ]
    requests = [cb for cb in callbacks if span.start <= cb.created < span.end]
    done = [cb for cb in requests if cb.status == "done"]
    delays = [(cb.completed - cb.created).total_seconds() for cb in done if cb.completed]
    return {
        "calls": len(mine),
        "nodes": per_node,
        "missed": {"count": missed, "rate": _ratio(missed, len(mine))},
        "without_daemon": without | {"rate": _ratio(sum(without.values()), len(mine))},
        "fallback_reached_nobody": reached_nobody(mine),
        "response_time": {
            "calls": len(waits),
            "average_s": average(waits),
            "p90_s": p90(waits),
        },
        "callbacks": {
            "requested": len(requests),
            "done": len(done),
            "completion_rate": _ratio(len(done), len(requests)),
            "time_to_callback_average_s": average(delays),
            "time_to_callback_p90_s": p90(delays),
        },
        "satisfaction": satisfaction(a for a in surveys if a.call_id in ids),
    }


def _ratio(n: int, d: int) -> float | None:
    return n / d if d else None


# -- rendering (French) -------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/d" if x is None else f"{100 * x:.1f} %".replace(".", ",")


def _secs(x: float | None) -> str:
    if x is None:
        return "n/d"
    if x < 60:
        return f"{x:.1f} s".replace(".", ",")
    if x < 3600:
        return f"{int(x // 60)} min {int(x % 60):02d} s"
    return f"{int(x // 3600)} h {int(x % 3600 // 60):02d} min"


def _rows(f: dict[str, Any]) -> list[tuple[str, str]]:
    m, r, cb = f["missed"], f["response_time"], f["callbacks"]
    w = f["without_daemon"]
    return [
        ("appels", str(f["calls"])),
        ("taux d'appels manqués", f"{_pct(m['rate'])} ({m['count']})"),
        (
            "sans le démon (repli, délestés, panne)",
            f"{_pct(w['rate'])} ({w['fallback']} / {w['shed']} / {w['recovered'] + w['lost']})",
        ),
        ("  n'ont joint personne après le repli", str(f["fallback_reached_nobody"])),
        (
            "temps de réponse moyen (équipe)",
            f"{_secs(r['average_s'])} ({r['calls']} appels)",
        ),
        ("temps de réponse p90 (équipe)", _secs(r["p90_s"])),
        (
            "rappels faits / demandés",
            f"{_pct(cb['completion_rate'])} ({cb['done']}/{cb['requested']})",
        ),
        ("délai de rappel moyen", _secs(cb["time_to_callback_average_s"])),
        ("délai de rappel p90", _secs(cb["time_to_callback_p90_s"])),
        ("satisfaction des patients (note moyenne)", _satisfaction(f["satisfaction"])),
        ("enquêtes : notes / proposées", _responses(f["satisfaction"])),
        # Several nodes share the database: each one's share of the calls.
        *((f"appels du nœud {n}", str(k)) for n, k in f["nodes"].items() if len(f["nodes"]) > 1),
    ]


def _satisfaction(s: dict[str, Any]) -> str:
    if s["status"] == "not collected":
        return "non collectée"
    if s["average"] is None:
        return "aucune note"
    return f"{s['average']:.1f} / {s['scale']}".replace(".", ",")


def _responses(s: dict[str, Any]) -> str:
    if s["status"] == "not collected":
        return "n/d"
    return f"{_pct(s['response_rate'])} ({s['ratings']}/{s['asked']})"


def _sections(r: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, title) of each flow section: all flows first (unless one flow was asked)."""
    if r["flow"] is not None:
        return [(r["flow"], f"flux {r['flow']}")]
    return [(ALL, "tous les flux"), *((name, f"flux {name}") for name in r["flows"])]


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Columns aligned: the first to the left, the figures to the right."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [headers, *rows]
    ]


def render_quality_text(r: dict[str, Any]) -> str:
    current, before = r["months"]
    out = [f"{r['title']} ({r['timezone']})", ""]
    for key, title in _sections(r):
        out.append(title.capitalize())
        mine, theirs = _rows(current["figures"][key]), _rows(before["figures"][key])
        rows = [[k, v, w] for (k, v), (_, w) in zip(mine, theirs, strict=True)]
        out += ["  " + line for line in _table(["", current["label"], before["label"]], rows)]
        out.append("")
    key = r["flow"] or ALL
    out.append(
        f"Par semaine ({current['label']}, {'flux ' + key if r['flow'] else 'tous les flux'})"
    )
    rows = []
    for w in r["weeks"]:
        f = w["figures"][key]
        rows.append(
            [
                w["label"],
                str(f["calls"]),
                _pct(f["missed"]["rate"]),
                _secs(f["response_time"]["average_s"]),
                _pct(f["callbacks"]["completion_rate"]),
            ]
        )
    headers = ["", "appels", "manqués", "réponse moy.", "rappels faits"]
    out += ["  " + line for line in _table(headers, rows)]
    out += ["", "Définitions"]
    out += [f"  - {text}" for text in r["definitions"].values()]
    return "\n".join(out) + "\n"


def render_quality_json(r: dict[str, Any]) -> str:
    return json.dumps(r, indent=2, ensure_ascii=False) + "\n"


def render_quality_html(r: dict[str, Any]) -> str:
    e = html.escape
    current, before = r["months"]
    parts = [
        '<!DOCTYPE html>\n<html lang="fr"><head><meta charset="utf-8">',
        f"<title>{e(r['title'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}th,td{padding:2px 1em}th{text-align:left;font-weight:normal}"
        "td{text-align:right}thead th{font-weight:bold;text-align:right}</style></head><body>",
        f"<h1>{e(r['title'])}</h1><p>Fuseau horaire : {e(r['timezone'])}</p>",
    ]
    for key, title in _sections(r):
        mine, theirs = _rows(current["figures"][key]), _rows(before["figures"][key])
        parts.append(f"<h2>{e(title.capitalize())}</h2><table><thead><tr><th></th>")
        parts.append(f"<th>{e(current['label'])}</th><th>{e(before['label'])}</th></tr></thead>")
        for (k, v), (_, w) in zip(mine, theirs, strict=True):
            parts.append(f"<tr><th>{e(k)}</th><td>{e(v)}</td><td>{e(w)}</td></tr>")
        parts.append("</table>")
    key = r["flow"] or ALL
    parts.append(f"<h2>Par semaine ({e(current['label'])})</h2><table><thead><tr><th></th>")
    for h in ("appels", "manqués", "réponse moy.", "rappels faits"):
        parts.append(f"<th>{e(h)}</th>")
    parts.append("</tr></thead>")
    for w in r["weeks"]:
        f = w["figures"][key]
        cells = (
            str(f["calls"]),
            _pct(f["missed"]["rate"]),
            _secs(f["response_time"]["average_s"]),
            _pct(f["callbacks"]["completion_rate"]),
        )
        parts.append(f"<tr><th>{e(w['label'])}</th>")
        parts.append("".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table><h2>Définitions</h2><ul>")
    parts += [f"<li>{e(text)}</li>" for text in r["definitions"].values()]
    parts.append("</ul></body></html>\n")
    return "".join(parts)


QUALITY_RENDERERS = {
    "text": render_quality_text,
    "json": render_quality_json,
    "html": render_quality_html,
}

__all__ = [
    "DEFINITIONS",
    "QUALITY_RENDERERS",
    "build_quality",
    "month_span",
    "previous_month",
    "response_time",
    "week_spans",
]
