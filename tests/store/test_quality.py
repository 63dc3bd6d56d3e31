"""The monthly quality report against figures computed by hand on a constructed call log
(calls, their typed step records, answers and callback requests): March 2026 beside
February, per flow and per week, in Europe/Paris (summer time starts on 29 March)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.store.commands import parse_bound
from callflow.store.maintenance import complete_callback
from callflow.store.models import Call, CallbackRequestRow
from callflow.store.quality import (
    build_quality,
    month_span,
    render_quality_html,
    render_quality_json,
    render_quality_text,
    response_time,
    week_spans,
)
from callflow.store.report import Period, build_report, render_text
from callflow.store.writer import write_records

PARIS = ZoneInfo("Europe/Paris")


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Log:
    """Builds the records the recorder writes for one call: start, steps, answer, end."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def call(
        self,
        cid: str,
        started: str,
        outcome: str,
        steps: Sequence[tuple[str, str, float, float]] = (),
        *,
        answer_at: float | None = None,
        flow: str = "cabinet",
        tier: int | None = None,
    ) -> None:
        """``steps``: (name, kind, start, duration) with start in seconds after ``started``;
        ``answer_at``: seconds after ``started``."""
        t0 = z(started)
        self.records.append(
            {
                "t": "call",
                "id": cid,
                "flow": flow,
                "flow_version": "v1",
                "dialed": "0388000000",
                "caller": "0612345678",
                "started": t0.isoformat(),
            }
        )
        for seq, (name, kind, start, duration) in enumerate(steps, 1):
            end = t0 + timedelta(seconds=start + duration)
            self.records.append(
                {
                    "t": "step",
                    "call_id": cid,
                    "seq": seq,
                    "at": end.isoformat(),
                    "step": name,
                    "kind": kind,
                    "result": "x",
                    "detail": "",
                    "next": None,
                    "duration": duration,
                }
            )
        if answer_at is not None:
            at = t0 + timedelta(seconds=answer_at)
            self.records.append({"t": "answered", "id": cid, "answered": at.isoformat()})
        self.records.append(
            {
                "t": "end",
                "id": cid,
                "flow": flow,
                "flow_version": "v1",
                "dialed": "0388000000",
                "caller": "0612345678",
                "started": t0.isoformat(),
                "ended": (t0 + timedelta(minutes=10)).isoformat(),
                "outcome": outcome,
                "tier": tier,
                "destination": None,
                "trunk": None,
                "end_step": "x",
                "detail": "",
            }
        )

    def callback(self, cid: str, created: str, flow: str = "cabinet") -> None:
        self.records.append(
            {
                "t": "callback",
                "call_id": cid,
                "flow": flow,
                "queue": "same-day",
                "priority": "high",
                "tier": None,
                "caller": "0612345678",
                "created": z(created).isoformat(),
            }
        )


def practice_log() -> Log:
    log = Log()
    # a1: menu 15 s, desk rings 20 s (no answer; its attempt recorded inside the step),
    # menu 10 s, the doctor answers 7 s into the second dial: 27 s, menus left out.
    log.call(
        "a1",
        "2026-03-02 08:00",
        "answered",
        [
            ("welcome", "menu", 0, 15),
            ("desk", "dial", 15, 20),
            ("desk", "attempt", 15, 20),
            ("again", "menu", 35, 10),
            ("doctor", "dial", 45, 300),  # ends after the conversation
        ],
        answer_at=52,
    )
    # a2: 30 s of menu, then the on-call queue (escalate, tier 2) rings 18 s.
    log.call(
        "a2",
        "2026-03-03 09:00",
        "answered",
        [("triage", "menu", 0, 30), ("oncall", "escalate", 30, 200)],
        answer_at=48,
        tier=2,
    )
    # Forwarded and emergency calls: answered, but not by the practice's staff.
    log.call(
        "f1",
        "2026-03-04 19:00",
        "forwarded",
        [("menu", "menu", 0, 40), ("secretariat", "forward", 40, 100)],
        answer_at=50,
    )
    log.call(
        "e1",
        "2026-03-06 10:00",
        "emergency",
        [("tier-1", "escalate", 0, 60)],
        answer_at=5,
        tier=1,
    )
    log.call(
        "o1", "2026-03-05 10:00", "answered", [("desk", "dial", 3, 60)], answer_at=7, flow="other"
    )
    log.call("m1", "2026-03-10 10:00", "abandoned", [("welcome", "menu", 0, 8)])
    log.call("m2", "2026-03-16 10:00", "failed")
    log.call("l1", "2026-03-31 21:30", "lost")  # 23:30 on 31 March in Paris (UTC+2)
    log.call("x1", "2026-03-31 22:30", "abandoned")  # 00:30 on 1 April in Paris: out
    log.call("v1", "2026-03-17 10:00", "voicemail")
    log.call("c1", "2026-03-18 10:00", "callback")
    log.callback("c1", "2026-03-18 10:00")  # done after 7200 s
    log.callback("k2", "2026-03-20 10:00")  # pending
    log.callback("k3", "2026-03-25 10:00")  # done after 1800 s
    log.callback("k4", "2026-03-26 10:00")  # cancelled
    log.callback("k5", "2026-02-26 10:00")  # February, done after 600 s
    # February
    log.call("p1", "2026-02-10 10:00", "answered", [("desk", "dial", 5, 60)], answer_at=17)
    log.call("p2", "2026-02-11 10:00", "abandoned")
    return log


DONE = {"c1": "2026-03-18 12:00", "k3": "2026-03-25 10:30", "k5": "2026-02-26 10:10"}


@pytest.fixture
async def fixture(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as conn:
        await write_records(conn, practice_log().records)
        ids = dict(
            (await conn.execute(select(CallbackRequestRow.call_id, CallbackRequestRow.id))).all()
        )
    for cid, at in DONE.items():
        assert await complete_callback(engine, ids[cid], by="desk", at=z(at))
    assert await complete_callback(
        engine, ids["k4"], by="desk", at=z("2026-03-26 11:00"), status="cancelled"
    )
    return engine


def test_response_time_counts_ringing_only() -> None:
    t0 = z("2026-03-02 08:00")
    rings = [(t0 + timedelta(seconds=35), 20.0), (t0 + timedelta(seconds=345), 300.0)]
    assert response_time(t0 + timedelta(seconds=52), rings) == 27.0
    # A dial that began after the answer (a transfer later on) does not count.
    assert response_time(t0 + timedelta(seconds=10), rings[1:]) is None


def test_weeks_of_march_2026() -> None:
    weeks = week_spans(month_span(2026, 3, PARIS), PARIS)
    assert [w.label for w in weeks] == [
        "semaine du 23 février (à partir du 1 mars)",
        "semaine du 2 mars",
        "semaine du 9 mars",
        "semaine du 16 mars",
        "semaine du 23 mars",
        "semaine du 30 mars",
    ]
    assert weeks[0].start.isoformat() == "2026-03-01T00:00:00+01:00"
    assert weeks[-1].end.isoformat() == "2026-04-01T00:00:00+02:00"


async def test_quality_figures_by_hand(fixture: AsyncEngine) -> None:
    r = await build_quality(fixture, 2026, 3, PARIS)
    march, february = r["months"]
    assert (march["label"], february["label"]) == ("mars 2026", "février 2026")
    assert march["from"] == "2026-03-01T00:00:00+01:00"
    assert march["to"] == "2026-04-01T00:00:00+02:00"
    assert r["flows"] == ["cabinet", "other"]

    every = march["figures"]["*"]
    assert every["calls"] == 10  # a1 a2 f1 e1 o1 m1 m2 l1 v1 c1
    assert every["missed"] == {"count": 3, "rate": pytest.approx(0.3)}  # m1 m2 l1
    # a1 27 s, a2 18 s, o1 4 s; f1 and e1 (not staff) left out.
    assert every["response_time"] == {
        "calls": 3,
        "average_s": pytest.approx(49 / 3),
        "p90_s": pytest.approx(27.0),
    }
    assert every["callbacks"] == {
        "requested": 4,
        "done": 2,
        "completion_rate": 0.5,
        "time_to_callback_average_s": pytest.approx(4500.0),
        "time_to_callback_p90_s": pytest.approx(7200.0),
    }
    assert every["satisfaction"]["status"] == "not collected"  # no survey in this log
    assert every["satisfaction"]["average"] is None

    cabinet, other = march["figures"]["cabinet"], march["figures"]["other"]
    assert cabinet["calls"] == 9 and cabinet["missed"]["rate"] == pytest.approx(3 / 9)
    assert cabinet["response_time"]["average_s"] == pytest.approx(22.5)
    assert other["calls"] == 1 and other["missed"]["rate"] == 0.0
    assert other["response_time"]["average_s"] == pytest.approx(4.0)
    assert other["callbacks"]["completion_rate"] is None  # none requested

    before = february["figures"]["*"]
    assert before["calls"] == 2 and before["missed"]["rate"] == 0.5
    assert before["response_time"]["average_s"] == pytest.approx(12.0)
    assert before["callbacks"]["time_to_callback_average_s"] == pytest.approx(600.0)

    weekly = [(w["label"], w["figures"]["*"]["calls"]) for w in r["weeks"]]
    assert [n for _, n in weekly] == [0, 5, 1, 3, 0, 1]
    assert sum(n for _, n in weekly) == every["calls"]  # the weeks add up to the month
    assert r["weeks"][1]["figures"]["*"]["response_time"]["calls"] == 3
    assert r["weeks"][5]["figures"]["*"]["missed"]["count"] == 1  # l1, 31 March


async def test_quality_for_one_flow(fixture: AsyncEngine) -> None:
    r = await build_quality(fixture, 2026, 3, PARIS, flow="other")
    assert r["flows"] == ["other"]
    assert r["months"][0]["figures"]["*"]["calls"] == 1
    assert r["months"][0]["figures"]["*"]["callbacks"]["requested"] == 0
    assert r["months"][1]["figures"]["*"]["calls"] == 0


async def test_quality_renderings(fixture: AsyncEngine) -> None:
    r = await build_quality(fixture, 2026, 3, PARIS)
    text = render_quality_text(r)
    assert text.startswith("Rapport qualité de la ligne : mars 2026 (Europe/Paris)")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "mars 2026 février 2026" in lines
    assert "taux d'appels manqués 30,0 % (3) 50,0 % (1)" in lines
    assert "temps de réponse moyen (équipe) 16,3 s (3 appels) 12,0 s (1 appels)" in lines
    assert "rappels faits / demandés 50,0 % (2/4) 100,0 % (1/1)" in lines
    assert "délai de rappel moyen 1 h 15 min 10 min 00 s" in lines
    assert "satisfaction des patients (note moyenne) non collectée non collectée" in lines
    assert "Flux cabinet" in lines and "Flux other" in lines
    assert "semaine du 2 mars 5 0,0 % 16,3 s n/d" in lines
    assert any("« non collectée » quand aucune enquête" in line for line in lines)
    assert any("le temps des menus et des messages n'est pas compté" in line for line in lines)
    assert json.loads(render_quality_json(r)) == json.loads(json.dumps(r))
    page = render_quality_html(r)
    assert page.startswith("<!DOCTYPE html>") and '<html lang="fr">' in page
    assert "<td>30,0 % (3)</td><td>50,0 % (1)</td>" in page
    assert "<h2>Définitions</h2>" in page


async def test_an_empty_month(engine: AsyncEngine) -> None:
    r = await build_quality(engine, 2026, 1, PARIS)
    assert r["months"][1]["label"] == "décembre 2025"
    figures = r["months"][0]["figures"]["*"]
    assert figures["calls"] == 0 and figures["missed"]["rate"] is None
    assert "n/d" in render_quality_text(r)


async def test_the_period_report_gives_the_staff_response_time(fixture: AsyncEngine) -> None:
    march = Period(
        parse_bound("2026-03-01", PARIS, end=False),
        parse_bound("2026-03-31", PARIS, end=True),
        PARIS,
    )
    r = await build_report(fixture, march)
    assert r["response_time"] == {
        "calls": 3,
        "average_s": pytest.approx(49 / 3),
        "p90_s": pytest.approx(27.0),
    }
    # The time to answer still counts from the call's start, menus included, for the
    # forwarded and emergency calls too: a1 52, a2 48, f1 50, e1 5, o1 7.
    assert r["time_to_answer"]["average_s"] == pytest.approx(162 / 5)
    lines = [" ".join(line.split()) for line in render_text(r).splitlines()]
    assert "response time, staff only, average (3 calls) 16.3 s" in lines


def test_weeks_where_dst_changes_at_midnight() -> None:
    # Santiago: clocks jump from 00:00 to 01:00 on Sunday 6 September 2026.
    santiago = ZoneInfo("America/Santiago")
    weeks = week_spans(month_span(2026, 9, santiago), santiago)
    assert weeks[0].label == "semaine du 31 août (à partir du 1 septembre)"
    assert weeks[1].start.isoformat() == "2026-09-07T00:00:00-03:00"
    assert all(a.end == b.start for a, b in itertools.pairwise(weeks))
    first = weeks[0].end.astimezone(UTC) - weeks[0].start.astimezone(UTC)
    assert first == timedelta(days=6, hours=-1)  # 1-6 September, one hour skipped


async def test_the_monthly_report_shows_the_calls_without_the_daemon_apart(
    engine: AsyncEngine,
) -> None:
    log = Log()
    log.call("q1", "2026-03-10 09:00", "answered")
    log.call("q2", "2026-03-10 09:05", "fallback")  # the dialplan alone (from the CDRs)
    log.call("q3", "2026-03-10 09:06", "fallback")
    log.call("q4", "2026-03-10 09:07", "shed")
    log.call("q5", "2026-03-10 09:08", "recovered")
    log.call("q6", "2026-03-10 09:09", "lost")
    async with engine.begin() as conn:
        await write_records(conn, log.records)
        # From the CDRs: the shed call's patient hung up while the secretariat rang; one
        # fallback call reached the secretariat.
        for cid, fate in (("q4", "abandoned"), ("q3", "secretariat")):
            await conn.execute(update(Call).where(Call.id == cid).values(fallback_fate=fate))
    r = await build_quality(engine, 2026, 3, PARIS)
    figures = r["months"][0]["figures"]["*"]
    assert figures["fallback_reached_nobody"] == 1
    assert figures["without_daemon"] == {
        "fallback": 2,
        "shed": 1,
        "recovered": 1,
        "lost": 1,
        "rate": pytest.approx(5 / 6),
    }
    assert figures["missed"]["count"] == 1  # lost only
    text = render_quality_text(r)
    assert "sans le démon (repli, délestés, panne)" in text and "83,3 % (2 / 1 / 2)" in text
    assert "repli du plan de numérotation" in text  # its definition is printed
    assert re.search(r"n'ont joint personne après le repli\s+1\b", text), text


async def test_the_monthly_report_covers_every_node(engine: AsyncEngine) -> None:
    """Two nodes on one database: one report, with each node's share of the calls."""
    log = Log()
    log.call("n1", "2026-03-03 09:00", "answered")
    log.call("n2", "2026-03-03 09:05", "abandoned")
    log.call("n3", "2026-03-04 10:00", "answered")
    async with engine.begin() as conn:
        await write_records(conn, log.records[:2], node="pbx-1")
        await write_records(conn, log.records[2:], node="pbx-2")
    r = await build_quality(engine, 2026, 3, PARIS)
    march = r["months"][0]["figures"]["*"]
    assert r["nodes"] == ["pbx-1", "pbx-2"]
    assert march["calls"] == 3 and march["nodes"] == {"pbx-1": 1, "pbx-2": 2}
    assert march["missed"]["count"] == 1
    text = render_quality_text(r)
    assert "appels du nœud pbx-1" in text and "appels du nœud pbx-2" in text
    # One node only: the report reads as it always did.
    one = await build_quality(engine, 2026, 3, PARIS, flow="nowhere")
    assert "nœud" not in render_quality_text(one)
    # The period report (--from/--to) counts each node's calls too.
    period = Period(z("2026-03-01 00:00"), z("2026-04-01 00:00"), PARIS)
    report = await build_report(engine, period)
    assert report["calls"]["by_node"] == {"pbx-1": 1, "pbx-2": 2}
    lines = [ln.split() for ln in render_text(report, "en").splitlines()]
    assert ["on", "node", "pbx-1", "1"] in lines and ["on", "node", "pbx-2", "2"] in lines
