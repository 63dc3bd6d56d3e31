"""Patient satisfaction in the call log and the reports, on SQLite and PostgreSQL: survey
steps written as the recorder writes them, figures computed by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.flow.engine import Engine
from callflow.flow.registry import load_flows
from callflow.flow.services import Services
from callflow.simulate import Scenario, SimulatedCall
from callflow.store.commands import parse_bound
from callflow.store.models import CallStep
from callflow.store.quality import build_quality, render_quality_html, render_quality_text
from callflow.store.report import Period, build_report, render_text
from callflow.store.writer import write_records

from .conftest import REPO
from .support import T0
from .test_quality import Log
from .test_recorder import make_recorder

PARIS = ZoneInfo("Europe/Paris")


def survey(log: Log, cid: str, result: str, score: int | None = None, scale: int = 5) -> None:
    """Append the survey step of call ``cid`` (after its other records, before its end)."""
    end = log.records.pop()  # the call's end record comes last
    log.records.append(
        {
            "t": "step",
            "call_id": cid,
            "seq": 99,
            "at": end["ended"],
            "step": "satisfaction",
            "kind": "survey",
            "result": result,
            "detail": "",
            "next": None,
            "duration": 6.0,
            "score": score,
            "scale": scale,
        }
    )
    log.records.append(end)


def surveyed_log() -> Log:
    log = Log()
    # March: five surveys asked on 'cabinet' (4, 5, 2 rated; two without rating), one not
    # asked (after an emergency: not counted), one call without survey; 'other' rates 3/3.
    for cid, day, result, score in [
        ("s1", "2026-03-02 09:00", "rated", 4),
        ("s2", "2026-03-03 09:00", "rated", 5),
        ("s3", "2026-03-10 09:00", "rated", 2),
        ("s4", "2026-03-11 09:00", "no rating", None),
        ("s5", "2026-03-12 09:00", "no rating", None),
        ("s6", "2026-03-13 09:00", "not asked", None),
    ]:
        log.call(cid, day, "answered", [("desk", "dial", 0, 60)], answer_at=5)
        survey(log, cid, result, score)
    log.call("n1", "2026-03-14 09:00", "answered", [("desk", "dial", 0, 60)], answer_at=5)
    log.call("o1", "2026-03-05 10:00", "answered", flow="other")
    survey(log, "o1", "rated", 3, scale=3)
    # February: one survey, rated 1 of 5.
    log.call("p1", "2026-02-10 10:00", "answered", [("desk", "dial", 0, 60)], answer_at=5)
    survey(log, "p1", "rated", 1)
    return log


@pytest.fixture
async def surveyed(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as conn:
        await write_records(conn, surveyed_log().records)
    return engine


async def test_monthly_satisfaction_by_hand(surveyed: AsyncEngine) -> None:
    r = await build_quality(surveyed, 2026, 3, PARIS)
    march, february = r["months"]
    cabinet = march["figures"]["cabinet"]["satisfaction"]
    assert cabinet == {
        "status": "collected",
        "asked": 5,
        "ratings": 3,
        "declined": 2,
        "response_rate": pytest.approx(3 / 5),
        "average": pytest.approx(11 / 3),
        "scale": 5,
        "by_score": {"2": 1, "4": 1, "5": 1},
    }
    other = march["figures"]["other"]["satisfaction"]
    assert (other["average"], other["scale"], other["ratings"]) == (3.0, 3, 1)
    # Over every flow the scales differ: 3 of 3 counts as 5 of 5.
    every = march["figures"]["*"]["satisfaction"]
    assert (every["asked"], every["ratings"], every["scale"]) == (6, 4, 5)
    assert every["average"] == pytest.approx((4 + 5 + 2 + 5) / 4)
    assert every["response_rate"] == pytest.approx(4 / 6)
    before = february["figures"]["cabinet"]["satisfaction"]
    assert (before["average"], before["ratings"], before["response_rate"]) == (1.0, 1, 1.0)
    weeks = [w["figures"]["*"]["satisfaction"]["ratings"] for w in r["weeks"]]
    assert weeks == [0, 3, 1, 0, 0, 0]  # s1 s2 o1 in the week of 2 March, s3 the next
    assert r["weeks"][0]["figures"]["*"]["satisfaction"]["status"] == "not collected"


async def test_monthly_satisfaction_rendered_beside_the_month_before(
    surveyed: AsyncEngine,
) -> None:
    r = await build_quality(surveyed, 2026, 3, PARIS, flow="cabinet")
    lines = [" ".join(line.split()) for line in render_quality_text(r).splitlines()]
    assert "satisfaction des patients (note moyenne) 3,7 / 5 1,0 / 5" in lines
    assert "enquêtes : notes / proposées 60,0 % (3/5) 100,0 % (1/1)" in lines
    assert any(line.startswith("- satisfaction des patients : note moyenne") for line in lines)
    page = render_quality_html(r)
    assert "<td>3,7 / 5</td><td>1,0 / 5</td>" in page


async def test_a_month_without_survey_says_not_collected(surveyed: AsyncEngine) -> None:
    r = await build_quality(surveyed, 2026, 4, PARIS)
    april = r["months"][0]
    assert april["figures"]["*"]["satisfaction"]["status"] == "not collected"
    lines = [" ".join(line.split()) for line in render_quality_text(r).splitlines()]
    assert "satisfaction des patients (note moyenne) non collectée 4,0 / 5" in lines


@pytest.mark.parametrize(
    ("language", "average", "rate"),
    [
        ("en", "patient satisfaction, average rating (3 ratings) 3.7 / 5", "60.0 % (3/5)"),
        ("fr", "satisfaction des patients, note moyenne (3 notes) 3,7 / 5", "60,0 % (3/5)"),
    ],
)
async def test_the_period_report_gives_satisfaction_in_both_languages(
    surveyed: AsyncEngine, language: str, average: str, rate: str
) -> None:
    march = Period(
        parse_bound("2026-03-01", PARIS, end=False),
        parse_bound("2026-03-31", PARIS, end=True),
        PARIS,
        flow="cabinet",
    )
    r = await build_report(surveyed, march)
    assert r["satisfaction"]["ratings"] == 3
    lines = [" ".join(line.split()) for line in render_text(r, language).splitlines()]
    assert average in lines
    assert any(line.endswith(rate) for line in lines), lines


async def test_the_engines_rating_is_stored_in_its_columns(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # The example flow, simulated: the caller presses 2 (the desk), then rates 4.
    flow = load_flows([REPO / "dialplans" / "cabinet-du-parc.yaml"]).flows["cabinet-du-parc"]
    rec = make_recorder(engine, tmp_path / "spool")
    task = asyncio.create_task(rec.run())
    services = Services(clock=lambda: T0, callbacks=rec, observer=rec)
    for digits in (["2", "4"], ["2"]):
        call = SimulatedCall(flow, Scenario(digits=digits), caller="0612345678", dialed="100")
        await Engine(services).run(flow, call)
    await rec.close()
    await task
    async with engine.connect() as conn:
        rows: list[Any] = list(
            (
                await conn.execute(
                    select(CallStep.result, CallStep.score, CallStep.scale)
                    .where(CallStep.kind == "survey")
                    .order_by(CallStep.call_id)
                )
            ).all()
        )
    assert sorted(tuple(r) for r in rows) == [("no rating", None, 5), ("rated", 4, 5)]
    month = await build_quality(engine, T0.year, T0.month, PARIS)
    figures = month["months"][0]["figures"]["*"]["satisfaction"]
    assert (figures["ratings"], figures["asked"], figures["average"]) == (1, 2, 4.0)
