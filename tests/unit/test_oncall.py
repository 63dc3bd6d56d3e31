"""On-call rotations across calendars: who is rung now, and the checks on rotations."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from callflow.cli import simulate
from callflow.errors import FlowError
from callflow.flow.oncall import on_call, on_call_timeline
from callflow.flow.registry import LoadedFlow
from callflow.schedule import Override, OverrideStore
from callflow.simulate import Scenario
from tests.support.flows import compile_flow

PARIS = ZoneInfo("Europe/Paris")

FLOW = """
version: 1
flow: rota
numbers: ["100"]
timezone: Europe/Paris
calendars:
  day:     {weekly: {mon-fri: ["08:00-20:00"]}, holidays: {country: FR}}
  night:   {weekly: {mon-thu: ["20:00-08:00"], fri: ["20:00-24:00"]}}
destinations:
  dr-a: {endpoint: PJSIP/dr-a}
  dr-b: {endpoint: PJSIP/dr-b}
  dr-c: {endpoint: PJSIP/dr-c}
  desk: {endpoint: PJSIP/accueil}
oncall:
  doctors:
    - {calendar: day, people: [dr-a, dr-b]}
    - {calendar: night, people: [dr-b]}
    - {people: [dr-c]}            # weekends and holidays
start: tier-2
steps:
  tier-2:
    escalate: {tier: 2, oncall: doctors, confirm: "1"}
    failed: desk
  desk:
    dial: desk
"""


def flow(text: str = FLOW) -> LoadedFlow:
    return compile_flow(text, "rota.yaml")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=PARIS)


@pytest.mark.parametrize(
    ("when", "people", "shift"),
    [
        ("2026-12-01 10:00", ["dr-a", "dr-b"], "day"),  # Tuesday, day
        ("2026-12-01 19:59", ["dr-a", "dr-b"], "day"),
        ("2026-12-01 20:00", ["dr-b"], "night"),  # the shift changes at the exact minute
        ("2026-12-02 07:59", ["dr-b"], "night"),  # across midnight
        ("2026-12-05 10:00", ["dr-c"], "default"),  # Saturday
        ("2026-12-25 10:00", ["dr-c"], "default"),  # Christmas: the day calendar is closed
    ],
)
def test_who_is_on_call(when: str, people: list[str], shift: str) -> None:
    now = on_call(flow(), "doctors", at(when))
    assert (now.people, now.shift) == (people, shift)


def test_an_override_of_a_calendar_moves_the_shift() -> None:
    overrides = OverrideStore()
    overrides.set("rota/day", Override(open=False, until=at("2026-12-02 08:00")))
    now = on_call(flow(), "doctors", at("2026-12-01 10:00"), overrides)
    assert now.people == ["dr-c"]  # day closed by hand, night not yet open: default


def test_timeline_of_a_week_merges_spans() -> None:
    spans = on_call_timeline(flow(), "doctors", at("2026-12-04 00:00"), at("2026-12-07 00:00"))
    shifts = [(s.start.strftime("%a %H:%M"), s.on_call.shift) for s in spans]
    assert shifts == [
        ("Fri 00:00", "night"),
        ("Fri 08:00", "day"),
        ("Fri 20:00", "night"),
        ("Sat 00:00", "default"),
    ]


async def test_the_engine_rings_who_is_on_call_now() -> None:
    f = flow()
    night, _ = await simulate(
        f, Scenario(), at("2026-12-01 22:00"), caller="0612345678", dialed="100"
    )
    last = night.steps[-1]
    assert (last.kind, last.tier, last.destination, last.outcome) == (
        "escalate",
        2,
        "dr-b",
        "answered",
    )
    assert last.detail.startswith("on call (doctors, night): dr-b; dr-b: answer")
    weekend, out = await simulate(
        f, Scenario(no_answer={"dr-c"}), at("2026-12-05 10:00"), caller="0612345678", dialed="100"
    )
    assert "on call (doctors, default): dr-c" in weekend.steps[1].detail
    assert out.destination == "desk"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("    - {people: [dr-c]}            # weekends and holidays\n", "has no default shift"),
        ("{calendar: night, people: [dr-b]}", "unknown calendar 'nights'"),
        ("{calendar: day, people: [dr-a, dr-b]}", "unknown destination 'dr-z'"),
        ("oncall: doctors, confirm", "unknown on-call rotation 'doctor'"),
    ],
)
def test_rotation_errors(change: str, message: str) -> None:
    replacement = {
        "has no default shift": "",
        "unknown calendar 'nights'": "{calendar: nights, people: [dr-b]}",
        "unknown destination 'dr-z'": "{calendar: day, people: [dr-a, dr-z]}",
        "unknown on-call rotation 'doctor'": "oncall: doctor, confirm",
    }[message]
    text = FLOW.replace(change, replacement)
    assert text != FLOW
    with pytest.raises(FlowError) as err:
        flow(text)
    assert any(message in str(d) for d in err.value.diagnostics), err.value.diagnostics
