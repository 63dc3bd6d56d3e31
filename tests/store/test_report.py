"""``callflow report`` figures against values computed by hand on a fixture."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.store.commands import parse_bound
from callflow.store.maintenance import complete_callback
from callflow.store.models import Call, CallbackRequestRow
from callflow.store.report import (
    Period,
    build_report,
    heatmap_svg,
    render_html,
    render_json,
    render_text,
)
from callflow.store.writer import write_records

PARIS = ZoneInfo("Europe/Paris")


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def call(
    cid: str,
    started: str,
    outcome: str | None,
    *,
    answer_after: float | None = None,
    tier: int | None = None,
    destination: str | None = None,
    flow: str = "cabinet",
) -> dict[str, Any]:
    start = z(started)
    rec: dict[str, Any] = {
        "t": "call" if outcome is None else "end",
        "id": cid,
        "flow": flow,
        "flow_version": "v1",
        "dialed": "0388000000",
        "caller": "0612345678",
        "started": start.isoformat(),
    }
    if outcome is not None:
        answered = None if answer_after is None else start + timedelta(seconds=answer_after)
        rec |= {
            "answered": answered.isoformat() if answered else None,
            "ended": (start + timedelta(minutes=3)).isoformat(),
            "outcome": outcome,
            "tier": tier,
            "destination": destination,
            "trunk": None,
            "end_step": "x",
            "detail": "",
        }
    return rec


def callback(cid: str, created: str) -> dict[str, Any]:
    return {
        "t": "callback",
        "call_id": cid,
        "flow": "cabinet",
        "queue": "same-day",
        "priority": "high",
        "tier": None,
        "caller": "0612345678",
        "created": z(created).isoformat(),
    }


# The week of Monday 2 March 2026 in Paris (UTC+1: summer time starts on 29 March).
CALLS = [
    call("c1", "2026-03-02 08:00", "answered", answer_after=10),  # Mon 09:00 Paris
    call("c2", "2026-03-02 08:10", "forwarded", answer_after=30, destination="telesecretariat"),
    call("c3", "2026-03-02 08:20", "abandoned"),
    call("c4", "2026-03-03 13:05", "emergency", answer_after=5, tier=1, destination="samu"),
    call("c5", "2026-03-03 13:30", "failed"),  # Tue 14:30 Paris
    call("c6", "2026-03-04 07:59", "callback", tier=2),  # Wed 08:59 Paris
    call("c7", "2026-03-04 09:00", "answered", answer_after=50, tier=2),  # Wed 10:00
    call("c8", "2026-03-07 10:00", "voicemail"),  # Sat 11:00
    call("c9", "2026-03-08 22:30", "forwarded", answer_after=20, destination="telesecretariat"),
    call("c10", "2026-03-08 23:30", "answered", answer_after=1),  # Mon 9 March 00:30: out
    call("c11", "2026-03-01 22:59", "answered", answer_after=1),  # Sun 1 March 23:59: out
    call("c12", "2026-03-02 08:00", "answered", answer_after=100, flow="other"),
    call("c13", "2026-03-05 10:00", None),  # Thu 11:00 Paris, no end recorded
]
CALLBACKS = [
    callback("c6", "2026-03-04 08:00"),  # done after 5400 s
    callback("x2", "2026-03-03 14:00"),  # done after 600 s
    callback("x3", "2026-03-05 10:00"),  # pending
    callback("x4", "2026-03-06 09:00"),  # cancelled
    callback("x5", "2026-03-09 10:00"),  # outside the period (done)
]
DONE = {"c6": "2026-03-04 09:30", "x2": "2026-03-03 14:10", "x5": "2026-03-09 11:00"}


@pytest.fixture
async def fixture(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as conn:
        await write_records(conn, CALLS + CALLBACKS)
        ids = dict(
            (await conn.execute(select(CallbackRequestRow.call_id, CallbackRequestRow.id))).all()
        )
    for cid, at in DONE.items():
        assert await complete_callback(engine, ids[cid], by="desk", at=z(at))
    assert await complete_callback(
        engine, ids["x4"], by="desk", at=z("2026-03-06 10:00"), status="cancelled"
    )
    return engine


def week(flow: str | None = None) -> Period:
    return Period(
        parse_bound("2026-03-02", PARIS, end=False),
        parse_bound("2026-03-08", PARIS, end=True),
        PARIS,
        flow,
    )


async def test_report_figures_by_hand(fixture: AsyncEngine) -> None:
    r = await build_report(fixture, week())
    assert r["period"]["from"] == "2026-03-02T00:00:00+01:00"
    assert r["period"]["to"] == "2026-03-09T00:00:00+01:00"
    assert r["calls"]["total"] == 11  # c1-c9, c12, c13
    assert r["calls"]["unfinished"] == 1
    assert r["calls"]["by_outcome"] == {
        "answered": 3,
        "forwarded": 2,
        "emergency": 1,
        "callback": 1,
        "voicemail": 1,
        "hangup": 0,
        "abandoned": 1,
        "failed": 1,
        "shed": 0,
        "fallback": 0,
        "recovered": 0,
        "lost": 0,
    }
    assert r["missed"] == {"count": 2, "rate": pytest.approx(2 / 11)}
    # c1 10, c2 30, c4 5, c7 50, c9 20, c12 100 seconds
    assert r["time_to_answer"] == {
        "calls": 6,
        "average_s": pytest.approx(215 / 6),
        "p90_s": pytest.approx(100.0),
    }
    assert r["callbacks"] == {
        "requested": 4,
        "done": 2,
        "pending": 1,
        "cancelled": 1,
        "completion_rate": 0.5,
        "delay_average_s": pytest.approx(3000.0),
        "delay_p90_s": pytest.approx(5400.0),
    }
    assert r["tiers"] == {"1": 1, "2": 2, "none": 8}
    assert r["forwarding"] == {
        "calls": 2,
        "rate": pytest.approx(2 / 11),
        "by_destination": {"telesecretariat": 2},
    }
    grid = r["volume"]["calls"]
    nonzero = {
        (r["volume"]["weekdays"][d], h): n
        for d, row in enumerate(grid)
        for h, n in enumerate(row)
        if n
    }
    assert nonzero == {
        ("Mon", 9): 4,
        ("Tue", 14): 2,
        ("Wed", 8): 1,
        ("Wed", 10): 1,
        ("Thu", 11): 1,
        ("Sat", 11): 1,
        ("Sun", 23): 1,
    }


async def test_report_for_one_flow(fixture: AsyncEngine) -> None:
    r = await build_report(fixture, week("cabinet"))
    assert r["calls"]["total"] == 10
    assert r["missed"]["rate"] == pytest.approx(0.2)
    assert r["time_to_answer"] == {
        "calls": 5,
        "average_s": pytest.approx(23.0),
        "p90_s": pytest.approx(50.0),
    }
    assert r["volume"]["calls"][0][9] == 3


async def test_report_renderings(fixture: AsyncEngine) -> None:
    r = await build_report(fixture, week())
    text = render_text(r)
    assert "missed-call rate (abandoned + failed + lost)  18.2 % (2)" in text
    assert "time to answer, p90" in text and "1 min 40 s" in text
    assert "callback completion rate" in text and "50.0 %" in text
    assert "Mon     .   .   .   .   .   .   .   .   .   4" in text
    assert json.loads(render_json(r)) == json.loads(json.dumps(r))
    page = render_html(r)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</svg>" in page
    assert "Mon 09:00-09:59: 4 calls" in page
    svg = ElementTree.fromstring(heatmap_svg(r))  # well-formed, 7 × 24 cells
    assert len(svg.findall("{http://www.w3.org/2000/svg}rect")) == 7 * 24
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no assets


async def test_an_empty_period(engine: AsyncEngine) -> None:
    r = await build_report(engine, week())
    assert r["calls"]["total"] == 0 and r["missed"]["rate"] is None
    assert r["time_to_answer"]["p90_s"] is None
    assert "n/a" in render_text(r) and "<svg" in render_html(r)


async def test_summer_time(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await write_records(conn, [call("s1", "2026-07-01 08:00", "answered", answer_after=3)])
    july = Period(
        parse_bound("2026-07-01", PARIS, end=False),
        parse_bound("2026-07-01", PARIS, end=True),
        PARIS,
    )
    r = await build_report(engine, july)
    assert r["volume"]["calls"][2][10] == 1  # Wednesday 10:00 in Paris (UTC+2)


async def test_calls_without_the_daemon_are_shown_apart(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await write_records(
            conn,
            [
                call("w1", "2026-03-02 08:00", "answered", answer_after=3),
                call("w2", "2026-03-02 08:05", "fallback"),  # imported from Asterisk's CDRs
                call("w3", "2026-03-02 08:06", "fallback"),
                call("w4", "2026-03-02 08:07", "recovered"),
                call("w5", "2026-03-02 08:08", "lost"),
                call("w6", "2026-03-02 08:09", "shed"),
            ],
        )
    r = await build_report(engine, week())
    assert r["without_daemon"] == {
        "fallback": 2,
        "shed": 1,
        "recovered": 1,
        "lost": 1,
        "rate": pytest.approx(5 / 6),
    }
    assert r["missed"]["count"] == 1  # lost is missed; fallback and recovered are not
    text = render_text(r)
    rows = dict(
        m.groups() for line in text.splitlines() if (m := re.match(r"\s*(.+?)\s{2,}(\S.*)$", line))
    )
    assert rows["without the daemon (fallback, shed, crash)"] == "83.3 % (5)"
    assert rows["dialplan fallback alone (daemon down)"] == "2"
    assert rows["crash: recovered / lost"] == "1 / 1"


async def test_where_the_dialplan_fallback_left_the_calls_it_took(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await write_records(
            conn,
            [
                call("f1", "2026-03-02 08:00", "shed"),
                call("f2", "2026-03-02 08:01", "shed"),
                call("f3", "2026-03-02 08:02", "shed"),  # its CDR not read (yet)
                call("f4", "2026-03-02 08:03", "fallback"),
                call("f5", "2026-03-02 08:04", "failed"),  # handed over mid-call
                call("f6", "2026-03-02 08:05", "answered", answer_after=3),
                call("f7", "2026-03-02 08:06", "recovered"),  # a crash; the fallback took it
            ],
        )
        # What the after-crash pass writes from the CDRs (cdr_import.follow_fallbacks).
        for cid, fate in (
            ("f1", "secretariat"),
            ("f2", "abandoned"),
            ("f4", "voicemail"),
            ("f5", "cut"),  # failed: a missed call already, not counted again here
            ("f7", "nobody"),
        ):
            await conn.execute(
                update(Call).where(Call.id == cid).values(fallback="x", fallback_fate=fate)
            )
    r = await build_report(engine, week())
    assert r["after_fallback"] == {
        "secretariat": 1,
        "outside": 0,
        "voicemail": 1,
        "nobody": 1,
        "abandoned": 1,
        "cut": 0,
        "not_known": 1,
        "reached_nobody": 2,
    }
    assert r["missed"]["count"] == 1  # the failed call: the outcomes' definition is kept
    for language, split, nobody in (
        ("en", "secretariat 1, voicemail 1, nobody 1, abandoned 1, not known 1", "reached nobody"),
        ("fr", "secrétariat 1, messagerie 1, personne 1, abandon 1, inconnu 1", "n'ont joint"),
    ):
        text = render_text(r, language)
        assert split in text
        assert re.search(rf"{nobody}.*\s2$", text, re.M), text


async def test_no_fallback_line_when_no_call_went_there(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await write_records(conn, [call("a1", "2026-03-02 08:00", "answered", answer_after=3)])
    r = await build_report(engine, week())
    assert "after the dialplan fallback" not in render_text(r)
