"""The real engine with HealthAwareSelector: failover that never strands a call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from callflow.flow.engine import Engine
from callflow.flow.events import OutcomeKind, StepKind
from callflow.flow.registry import LoadedFlow
from callflow.flow.services import Services
from callflow.simulate import Scenario, SimulatedCall
from callflow.telephony import DialResult, DialStatus
from callflow.trunks import ContactUpdate, HealthAwareSelector, TrunkHealth, TrunkState
from tests.support.flows import compile_flow
from tests.support.observer import RecordingObserver as Recorder

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


class TrunkDiesWhileRinging(SimulatedCall):
    """trunk-a rings, then dies: qualify finds it unreachable before the ring time ends."""

    def __init__(self, sel: HealthAwareSelector, f: LoadedFlow) -> None:
        super().__init__(f, Scenario(digits=["2"]), caller="0612345678", dialed="100")
        self.sel = sel

    async def dial(self, target: str, **kwargs: Any) -> DialResult:
        if target.endswith("@trunk-a"):
            update = ContactUpdate("trunk-a", "sip:trunk-a.example", TrunkState.UNREACHABLE)
            self.sel.health.apply(update)
            self.actions.append(f"dial {target} -> NOANSWER")
            return DialResult(DialStatus.NOANSWER)
        return await super().dial(target, **kwargs)


async def test_a_trunk_that_dies_while_it_rings_is_a_trunk_fault_the_next_one_is_tried() -> None:
    # Found by the fault matrix (trunk-a killed under load): the call rang out on the dead
    # trunk (NOANSWER, "not a trunk fault"), trunk-b was never tried, the caller reached nobody.
    sel = selector({"trunk-a": TrunkState.REACHABLE, "trunk-b": TrunkState.REACHABLE})
    f = flow()
    sim = TrunkDiesWhileRinging(sel, f)
    outcome = await Engine(Services(clock=lambda: NOW, trunks=sel)).run(f, sim)
    assert dials(sim) == [
        "dial PJSIP/0180000000@trunk-a -> NOANSWER",
        "dial PJSIP/0180000000@trunk-b -> ANSWER",
    ]
    assert (outcome.kind, outcome.trunk) == (OutcomeKind.FORWARDED, "trunk-b")
    assert sel.consecutive_failures("trunk-a") == 1  # its breaker learns it, not "went through"


async def test_a_callee_who_does_not_answer_on_a_live_trunk_is_not_a_trunk_fault() -> None:
    sel = selector({"trunk-a": TrunkState.REACHABLE, "trunk-b": TrunkState.REACHABLE})
    f = flow()
    sim = SimulatedCall(
        f, Scenario(digits=["2"], no_answer={"secretariat"}), caller="0612345678", dialed="100"
    )
    outcome = await Engine(Services(clock=lambda: NOW, trunks=sel)).run(f, sim)
    assert dials(sim)[0] == "dial PJSIP/0180000000@trunk-a -> NOANSWER"
    assert not any("@trunk-b" in d for d in dials(sim))  # no failover on a live trunk
    assert outcome.destination == "desk"


async def test_an_emergency_ringing_out_on_trunks_down_before_is_no_answer_not_a_trunk_fault() -> (
    None
):
    # Found in review: tier 1 rings trunks qualify already found down; its ring-out was
    # taken for "the trunk went down while ringing" and logged CHANUNAVAIL (and counted
    # against the trunk's breaker), though the line simply did not answer.
    sel = selector({"trunk-a": TrunkState.UNREACHABLE, "trunk-b": TrunkState.UNREACHABLE})
    f = flow()
    sim = SimulatedCall(
        f, Scenario(digits=["1"], no_answer={"samu"}), caller="0612345678", dialed="100"
    )
    rec = Recorder()
    await Engine(Services(clock=lambda: NOW, trunks=sel, observer=rec)).run(f, sim)
    attempts = [r for r in rec.steps if r.kind is StepKind.ATTEMPT and r.trunk is not None]
    # The line rang out: no answer (not a trunk to fail over from).
    assert [(r.trunk, r.dial_status) for r in attempts] == [("trunk-b", DialStatus.NOANSWER)]
    assert sel.consecutive_failures("trunk-b") == 0
