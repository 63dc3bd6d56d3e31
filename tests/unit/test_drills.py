"""Forwarding drills: what is drilled, the runner over the real ARI test caller (a real
AriClient on the fake Asterisk transport, virtual clock), and never an emergency call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from callflow.ari.channels import ChannelRegistry
from callflow.ari.testcall import AriTestCaller
from callflow.drills import (
    DrillMode,
    DrillRunner,
    EmergencyNumberRefused,
    drill_targets,
    forwarding_destinations,
    is_emergency_number,
)
from callflow.drills.targets import DrillTarget
from tests.support.fake_asterisk import (
    ANSWER,
    CONGESTION,
    RINGOUT,
    FakeAsterisk,
    Leg,
    client_for,
    route_to,
)
from tests.support.flows import compile_flow
from tests.support.polling import wait_until

pytestmark = pytest.mark.looptime

AT = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)

FLOW = """
version: 1
flow: cabinet
numbers: ["100"]
timezone: Europe/Paris
calendars:
  office: {weekly: {mon-fri: ["08:00-19:00"]}}
destinations:
  desk: {endpoint: PJSIP/accueil, ring: 10s}
  telesecretariat: {number: "0180000000", route: outbound, ring: 6s}
  garde: {number: "116117", route: outbound, ring: 6s}
  samu: {number: "15", route: emergency, ring: 10s}
  dr-a: {number: "0611111111", route: outbound, ring: 6s}
routes:
  outbound: [trunk-a, trunk-b]
  emergency: [trunk-b, trunk-a]
start: hours
steps:
  hours: {schedule: office, open: menu, closed: after-hours}
  menu:
    menu: {prompt: beep, options: {"1": desk-call, "2": tier-1, "3": oncall}, attempts: 1}
    failed: after-hours
  desk-call: {dial: desk, failed: after-hours}
  after-hours: {forward: telesecretariat, failed: gp}
  gp: {forward: garde, failed: bye}
  tier-1: {escalate: {tier: 1, to: samu}, failed: desk-call}
  oncall: {escalate: {tier: 2, ring_in_turn: [dr-a], confirm: "1"}, failed: bye}
  bye: {hangup: {}}
"""

EMERGENCIES = ["15", "17", "18", "112", "114", "115", "119", "191", "196", "197", "116117"]
EMERGENCIES += ["116000", "116006", "3114", "3919", "+3315", "0033112"]


def clock() -> datetime:
    return AT


def healthy(trunk: str) -> tuple[bool, str]:
    return trunk == "trunk-b", "reachable (qualify)" if trunk == "trunk-b" else "unreachable"


def setup(endpoints: dict[str, Leg]) -> tuple[DrillRunner, FakeAsterisk]:
    registry = ChannelRegistry()
    pbx = FakeAsterisk(endpoints, sink=route_to(registry))
    caller = AriTestCaller(client_for(pbx), registry)
    return DrillRunner(caller, healthy, clock, caller_id="0100000000"), pbx


def originated(pbx: FakeAsterisk) -> list[str]:
    return [r.params["endpoint"] for r in pbx.sent("POST", "/channels")]


# -- what is drilled ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    # As written, and as a carrier might read a prefixed form (found in review: "+112",
    # "+15" and "33112" passed as ordinary numbers).
    [*EMERGENCIES, "+33 15", "1 12", "+112", "+15", "33112", "0033 116 117", "+33116117"],
)
def test_french_emergency_and_urgent_numbers_are_known(number: str) -> None:
    assert is_emergency_number(number)


@pytest.mark.parametrize(
    "number", ["0180000000", "0612345678", "+33180000000", "0033180000000", "3631", "+3311234"]
)
def test_ordinary_numbers_are_not_emergencies(number: str) -> None:
    assert not is_emergency_number(number)


def test_forwarding_destinations_and_their_mode() -> None:
    spec = compile_flow(FLOW).spec
    # desk is an internal phone, dr-a an on-call person's mobile: not drilled.
    assert forwarding_destinations(spec) == {
        "telesecretariat": DrillMode.CALL,
        "garde": DrillMode.HEALTH,  # 116117: an urgent number, never called
        "samu": DrillMode.HEALTH,  # a tier 1 destination
    }
    legs = [(t.destination, t.trunk, t.mode) for t in drill_targets(spec)]
    assert legs[:2] == [
        ("telesecretariat", "trunk-a", DrillMode.CALL),
        ("telesecretariat", "trunk-b", DrillMode.CALL),
    ]
    assert ("samu", "trunk-b", DrillMode.HEALTH) in legs
    assert [t.trunk for t in drill_targets(spec, "samu")] == ["trunk-b", "trunk-a"]
    with pytest.raises(ValueError, match="'desk' is not a forwarding destination"):
        drill_targets(spec, "desk")


def test_a_target_never_gives_an_emergency_endpoint() -> None:
    for number in EMERGENCIES:
        target = DrillTarget("f", "d", number, "trunk-a", 6.0, DrillMode.CALL)
        with pytest.raises(EmergencyNumberRefused):
            _ = target.endpoint


# -- the runner over ARI ---------------------------------------------------------------------


async def test_a_drill_passes_when_answered_and_hangs_up_at_once() -> None:
    runner, pbx = setup({"PJSIP/0180000000@trunk-a": ANSWER, "PJSIP/0180000000@trunk-b": ANSWER})
    spec = compile_flow(FLOW).spec
    results = await runner.run(drill_targets(spec, "telesecretariat"))
    assert [(r.trunk, r.passed, r.mode) for r in results] == [
        ("trunk-a", True, DrillMode.CALL),
        ("trunk-b", True, DrillMode.CALL),
    ]
    assert all(r.reason.startswith("answered in ") for r in results)
    assert originated(pbx) == ["PJSIP/0180000000@trunk-a", "PJSIP/0180000000@trunk-b"]
    first = pbx.sent("POST", "/channels")[0].params
    assert first["appArgs"] == "leg,drill" and first["callerId"] == "0100000000"
    # Each test channel is hung up right after its answer: before the next originate.
    lines = pbx.lines()
    hangups = [i for i, line in enumerate(lines) if line.startswith("DELETE /channels/drill-")]
    posts = [i for i, line in enumerate(lines) if line == "POST /channels"]
    assert len(hangups) == 2 and posts[0] < hangups[0] < posts[1] < hangups[1]
    await wait_until(lambda: not pbx.channels)  # both test channels are gone


async def test_a_silent_or_refusing_trunk_fails_with_a_reason() -> None:
    runner, pbx = setup(
        {"PJSIP/0180000000@trunk-a": RINGOUT, "PJSIP/0180000000@trunk-b": CONGESTION}
    )
    spec = compile_flow(FLOW).spec
    loop = asyncio.get_running_loop()
    start = loop.time()
    a, b = await runner.run(drill_targets(spec, "telesecretariat"))
    assert (a.passed, a.reason) == (False, "no answer within 6 s")
    assert not b.passed and b.reason.startswith("trunk refused the call (congestion)")
    assert loop.time() - start < 6 + 2  # the ring time bounds the unanswered leg
    assert pbx.hung_up()[0].startswith("drill-")  # the ringing channel was ended


async def test_a_trunk_the_pbx_refuses_fails_with_its_words() -> None:
    runner, _pbx = setup({})  # no endpoint: Asterisk answers 400 "Allocation failed"
    [a, _b] = await runner.run(drill_targets(compile_flow(FLOW).spec, "telesecretariat"))
    assert not a.passed and "Allocation failed" in a.reason


async def test_no_originate_is_ever_issued_to_an_emergency_number() -> None:
    # Every emergency number as a forward destination, each of which would answer.
    dests = "\n".join(
        f'  d{i}: {{number: "{n}", route: outbound, ring: 6s}}' for i, n in enumerate(EMERGENCIES)
    )
    chain = "\n".join(
        f"  s{i}: {{forward: d{i}, failed: s{i + 1}}}" for i in range(len(EMERGENCIES))
    )
    flow = compile_flow(
        f"""
version: 1
flow: urgences
numbers: ["112"]
timezone: Europe/Paris
destinations:
{dests}
routes:
  outbound: [trunk-a, trunk-b]
start: s0
steps:
{chain}
  s{len(EMERGENCIES)}: {{hangup: {{}}}}
"""
    )
    every = {f"PJSIP/{n}@{t}": ANSWER for n in EMERGENCIES for t in ("trunk-a", "trunk-b")}
    runner, pbx = setup(every)
    results = await runner.run(drill_targets(flow.spec))
    assert len(results) == 2 * len(EMERGENCIES)
    assert pbx.sent("POST", "/channels") == [] and pbx.requests == []
    assert {r.mode for r in results} == {DrillMode.HEALTH}
    assert [r.passed for r in results[:2]] == [False, True]  # trunk-a down, trunk-b up
    assert results[0].reason == "emergency route, no test call: trunk unreachable"
    # Even a target forged as a real call, and the adapter asked directly, refuse.
    forged = DrillTarget("urgences", "d0", "15", "trunk-a", 6.0, DrillMode.CALL)
    assert (await runner.run([forged]))[0].mode is DrillMode.HEALTH
    caller = AriTestCaller(client_for(pbx), ChannelRegistry())
    for number in EMERGENCIES:
        with pytest.raises(EmergencyNumberRefused):
            await caller.call(f"PJSIP/{number}@trunk-a", 6.0, None)
    assert pbx.requests == []


@pytest.mark.parametrize("fault", [FakeAsterisk.stall, FakeAsterisk.drop])
async def test_an_originate_with_no_answer_is_hung_up_all_the_same(
    fault: Callable[[FakeAsterisk, str, str], None],
) -> None:
    # Found in review: a timeout or a dropped socket may come after Asterisk created the
    # channel; taken for a refusal, the test call was left ringing the secretariat while
    # the next trunk's rang too.
    runner, pbx = setup({"PJSIP/0180000000@trunk-a": ANSWER, "PJSIP/0180000000@trunk-b": ANSWER})
    fault(pbx, "POST", "/channels")
    spec = compile_flow(FLOW).spec
    a, _b = await runner.run(drill_targets(spec, "telesecretariat"))
    assert not a.passed and "no answer from the PBX" in a.reason
    lines = pbx.lines()
    assert lines[0] == "POST /channels" and lines[1].startswith("DELETE /channels/drill-")
