"""The real engine with HealthAwareSelector: failover that never strands a call."""

from __future__ import annotations

from datetime import UTC, datetime

from callflow.flow.engine import Engine
from callflow.flow.events import OutcomeKind
from callflow.flow.registry import LoadedFlow
from callflow.flow.services import Services
from callflow.simulate import Scenario, SimulatedCall
from callflow.trunks import ContactUpdate, HealthAwareSelector, TrunkHealth, TrunkState
from tests.support.flows import compile_flow

FLOW = """
version: 1
flow: t
numbers: ["100"]
timezone: Europe/Paris
destinations:
  desk: {endpoint: PJSIP/accueil}
  secretariat: {number: "0180000000", route: outbound}
  samu: {number: "15", route: emergency}
routes:
  outbound: [trunk-a, trunk-b]
  emergency: [trunk-b, trunk-a]
start: first
steps:
  first:
    menu:
      prompt: custom/menu
      options: {"1": urgent, "2": out}
      attempts: 1
    failed: out
  out:
    forward: secretariat
    failed: desk
  urgent:
    escalate: {tier: 1, announce: custom/call-15, to: samu}
    failed: desk
  desk:
    dial: desk
"""
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def flow() -> LoadedFlow:
    return compile_flow(FLOW)


def selector(states: dict[str, TrunkState]) -> HealthAwareSelector:
    health = TrunkHealth(["trunk-a", "trunk-b"], clock=lambda: NOW)
    health.resync(ContactUpdate(t, f"sip:{t}.example", s, 20.0) for t, s in states.items())
    return HealthAwareSelector(health, monotonic=lambda: 0.0)


async def call(
    sel: HealthAwareSelector, *, digits: list[str] | None = None, down: set[str] | None = None
) -> tuple[SimulatedCall, OutcomeKind, str | None, str | None]:
    f = flow()
    sim = SimulatedCall(
        f, Scenario(digits=digits or ["2"], down=down or set()), caller="0612345678", dialed="100"
    )
    outcome = await Engine(Services(clock=lambda: NOW, trunks=sel)).run(f, sim)
    return sim, outcome.kind, outcome.trunk, outcome.destination


def dials(sim: SimulatedCall) -> list[str]:
    return [a for a in sim.actions if a.startswith("dial")]


async def test_an_unreachable_trunk_is_not_even_tried() -> None:
    sel = selector({"trunk-a": TrunkState.UNREACHABLE, "trunk-b": TrunkState.REACHABLE})
    sim, kind, trunk, _ = await call(sel)
    assert dials(sim) == ["dial PJSIP/0180000000@trunk-b -> ANSWER"]
    assert (kind, trunk) == (OutcomeKind.FORWARDED, "trunk-b")


async def test_all_trunks_down_takes_the_failed_branch_and_the_caller_reaches_a_human() -> None:
    sel = selector({"trunk-a": TrunkState.UNREACHABLE, "trunk-b": TrunkState.UNREACHABLE})
    sim, kind, trunk, dest = await call(sel)
    assert dials(sim) == ["dial PJSIP/accueil -> ANSWER"]
    assert (kind, trunk, dest) == (OutcomeKind.ANSWERED, None, "desk")


async def test_an_emergency_tries_even_unreachable_trunks() -> None:
    sel = selector({"trunk-a": TrunkState.UNREACHABLE, "trunk-b": TrunkState.UNREACHABLE})
    sim, kind, trunk, _ = await call(sel, digits=["1"], down={"trunk-b"})
    assert dials(sim) == [
        "dial PJSIP/15@trunk-b -> CHANUNAVAIL",
        "dial PJSIP/15@trunk-a -> ANSWER",
    ]
    assert (kind, trunk) == (OutcomeKind.EMERGENCY, "trunk-a")


async def test_the_breaker_learns_from_calls_and_skips_a_failing_trunk() -> None:
    # Qualify is off on both trunks (unknown): only calls tell that trunk-a is broken.
    sel = selector({"trunk-a": TrunkState.UNKNOWN, "trunk-b": TrunkState.UNKNOWN})
    for _ in range(3):
        sim, _, trunk, _ = await call(sel, down={"trunk-a"})
        assert len(dials(sim)) == 2 and trunk == "trunk-b"
    sim, _, trunk, _ = await call(sel, down={"trunk-a"})
    assert dials(sim) == ["dial PJSIP/0180000000@trunk-b -> ANSWER"]
    assert sel.breaker_open("trunk-a")
