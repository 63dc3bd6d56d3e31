"""Live metrics (callflow.metrics): fed by the real engine, read at scrape time, valid for
Prometheus (``promtool check metrics``), bounded labels only."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import prometheus_client
import pytest

from callflow.flow.engine import Engine
from callflow.flow.events import (
    CallAnswered,
    CallInfo,
    FanOut,
    Outcome,
    OutcomeKind,
    StepKind,
    StepRecord,
    StepResult,
)
from callflow.flow.registry import LoadedFlow
from callflow.flow.services import MemoryCallbacks, Services
from callflow.metrics import CallbackBacklog, Metrics, Probes
from callflow.simulate import Scenario, SimulatedCall
from callflow.telephony import DialStatus
from callflow.trunks import (
    ContactUpdate,
    HealthAwareSelector,
    TrunkHealth,
    TrunkSnapshot,
    TrunkState,
)
from tests.support.flows import compile_flow

CALLER = "0612345678"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

FLOW = """
version: 1
flow: t
numbers: ["100"]
timezone: Europe/Paris
fallback: desk
destinations:
  desk: {endpoint: PJSIP/accueil}
  dr-a: {number: "0600000001", route: outbound}
  dr-b: {number: "0600000002", route: outbound}
  samu: {number: "15", route: emergency}
routes:
  outbound: [trunk-a, trunk-b]
  emergency: [trunk-b, trunk-a]
queues:
  same-day: {overdue: 4h}
start: first
steps:
  first:
    menu:
      prompt: custom/menu
      options: {"1": urgent, "2": doctor, "3": cb}
      attempts: 1
    failed: desk-call
  urgent:
    escalate: {tier: 1, announce: custom/call-15, to: samu}
    failed: desk-call
  doctor:
    escalate: {tier: 2, ring_in_turn: [dr-a, dr-b], confirm: "1"}
    failed: cb
  cb:
    callback: {queue: same-day, priority: high}
  desk-call:
    dial: desk
"""


def flow() -> LoadedFlow:
    return compile_flow(FLOW)


class Ticking:
    """A clock that moves one second at each reading."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def selector() -> HealthAwareSelector:
    health = TrunkHealth(["trunk-a", "trunk-b"], clock=lambda: NOW)
    return HealthAwareSelector(health, monotonic=lambda: 0.0)


async def run(m: Metrics, scenario: Scenario, sel: HealthAwareSelector | None = None) -> Outcome:
    f = flow()
    services = Services(
        clock=Ticking(),
        trunks=sel or selector(),
        callbacks=MemoryCallbacks(),
        observer=FanOut(m),
    )
    call = SimulatedCall(f, scenario, caller=CALLER, dialed="100")
    return await Engine(services).run(f, call)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_nothing_goes_to_the_global_registry() -> None:
    m = Metrics()
    m.call_started(CallInfo("c1", "t", "v", CALLER, "100", NOW))
    assert b"callflow_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)
    assert b"callflow_calls_active" in m.render()
    Metrics()  # a second one (a test, a restart in-process) registers nothing twice


async def test_an_emergency_with_a_trunk_failover() -> None:
    m = Metrics()
    outcome = await run(m, Scenario(digits=["1"], down={"trunk-b"}))
    assert outcome.kind is OutcomeKind.EMERGENCY
    assert value(m, "callflow_calls_total", flow="t", outcome="emergency", driver="simulator") == 1
    assert value(m, "callflow_calls_missed_total", flow="t") == 0
    assert value(m, "callflow_calls_active", flow="t") == 0
    assert value(m, "callflow_trunk_attempts_total", trunk="trunk-b", result="chanunavail") == 1
    assert value(m, "callflow_trunk_attempts_total", trunk="trunk-a", result="answer") == 1
    assert value(m, "callflow_trunk_failovers_total", trunk="trunk-b") == 1
    assert value(m, "callflow_escalations_total", tier="1", result="accepted") == 1
    assert value(m, "callflow_escalation_accept_seconds_count", tier="1") == 1
    assert value(m, "callflow_call_answer_seconds_count", flow="t") == 1
    assert value(m, "callflow_call_duration_seconds_count", flow="t", outcome="emergency") == 1
    assert value(m, "callflow_step_duration_seconds_count", kind="menu") == 1
    assert value(m, "callflow_step_duration_seconds_count", kind="escalate") == 1
    assert value(m, "callflow_step_duration_seconds_count", kind="attempt") is None
    assert value(m, "callflow_steps_total", flow="t", step="urgent", kind="escalate") == 1


async def test_a_busy_callee_is_no_failover() -> None:
    m = Metrics()
    await run(m, Scenario(digits=["2"], busy={"dr-a"}, decline={"dr-b"}))
    assert value(m, "callflow_trunk_failovers_total", trunk="trunk-a") is None
    assert value(m, "callflow_trunk_attempts_total", trunk="trunk-a", result="busy") == 1
    assert value(m, "callflow_trunk_attempts_total", trunk="trunk-a", result="declined") == 1
    # Nobody accepted: the flow queued a callback (tier 2 kept).
    assert value(m, "callflow_escalations_total", tier="2", result="failed") == 1
    assert value(m, "callflow_calls_total", flow="t", outcome="callback", driver="simulator") == 1
    assert value(m, "callflow_callbacks_requested_total", flow="t", tier="2") == 1


def _rec(seq: int, kind: StepKind, result: StepResult, at: datetime, **kw: Any) -> StepRecord:
    fields: dict[str, Any] = {"step": "doctor", "next": None, "duration": 0.0, **kw}
    return StepRecord("c1", "t", seq, kind=kind, result=result, at=at, **fields)


async def test_a_tier_2_acceptance_time_counts_from_the_step_start() -> None:
    m = Metrics()
    i = CallInfo("c1", "t", "v", CALLER, "100", NOW)
    m.call_started(i)
    end = NOW + timedelta(seconds=300)
    answered = NOW + timedelta(seconds=10 + 42)  # the step began at +10 s
    ring = {"trunk": "trunk-a", "tier": 2}
    noanswer = DialStatus.NOANSWER
    m.step(
        _rec(
            1,
            StepKind.ATTEMPT,
            StepResult.NOANSWER,
            end,
            destination="dr-a",
            **ring,
            dial_status=noanswer,
        )
    )
    m.call_answered(CallAnswered("c1", "t", answered, "doctor", "dr-b", "trunk-a", 2))
    m.step(
        _rec(
            2,
            StepKind.ATTEMPT,
            StepResult.ANSWER,
            end,
            destination="dr-b",
            **ring,
            dial_status=DialStatus.ANSWER,
        )
    )
    m.step(
        _rec(
            3,
            StepKind.ESCALATE,
            StepResult.ACCEPTED,
            end,
            destination="dr-b",
            **ring,
            dial_status=DialStatus.ANSWER,
            duration=290.0,
        )
    )
    m.call_ended(i, Outcome(OutcomeKind.ANSWERED, "doctor", "dr-b", "trunk-a", 2), end)
    assert value(m, "callflow_escalation_accept_seconds_sum", tier="2") == 42
    assert value(m, "callflow_escalations_total", tier="2", result="accepted") == 1
    assert value(m, "callflow_call_answer_seconds_sum", flow="t") == 52
    assert value(m, "callflow_trunk_attempts_total", trunk="trunk-a", result="noanswer") == 1
    # A callee who did not answer is no trunk fault: no failover.
    assert value(m, "callflow_trunk_failovers_total", trunk="trunk-a") is None


def test_only_the_first_answer_is_the_time_to_answer() -> None:
    m = Metrics()
    i = CallInfo("c1", "t", "v", CALLER, "100", NOW)
    m.call_started(i)
    for seconds in (20, 200):
        at = NOW + timedelta(seconds=seconds)
        m.call_answered(CallAnswered("c1", "t", at, "desk", "secretariat", None, None))
    m.call_ended(i, Outcome(OutcomeKind.ANSWERED, "desk", "secretariat"), NOW)
    assert value(m, "callflow_call_answer_seconds_count", flow="t") == 1
    assert value(m, "callflow_call_answer_seconds_sum", flow="t") == 20


async def test_missed_calls_and_active_calls() -> None:
    m = Metrics()
    await run(m, Scenario(digits=[], hangup_after_prompts=0))
    assert value(m, "callflow_calls_total", flow="t", outcome="abandoned", driver="simulator") == 1
    assert value(m, "callflow_calls_missed_total", flow="t") == 1
    i = CallInfo("c2", "t", "v", CALLER, "100", NOW)
    m.call_started(i)
    assert value(m, "callflow_calls_active", flow="t") == 1
    m.call_ended(i, Outcome(OutcomeKind.FAILED, "first"), NOW)
    assert value(m, "callflow_calls_active", flow="t") == 0
    assert value(m, "callflow_calls_missed_total", flow="t") == 2


def test_a_voicemail_that_took_no_message_counts_as_missed_once_its_cdr_is_read() -> None:
    m = Metrics()
    i = CallInfo("c3", "t", "v", CALLER, "100", NOW)
    m.call_started(i)
    m.call_ended(i, Outcome(OutcomeKind.VOICEMAIL, "message"), NOW)
    assert value(m, "callflow_calls_missed_total", flow="t") == 0
    m.voicemail_without_message("t")  # the after-crash part read its CDR
    assert value(m, "callflow_calls_missed_total", flow="t") == 1
    assert value(m, "callflow_voicemail_no_message_total", flow="t") == 1
    # The outcome counter cannot go back: it still says voicemail.
    assert value(m, "callflow_calls_total", flow="t", outcome="voicemail", driver="ari") == 1


def test_events_out_of_order_never_raise() -> None:
    m = Metrics()
    i = CallInfo("ghost", "t", "v", CALLER, "100", NOW)
    # Steps, an answer and an end of a call never started; a negative duration; an attempt
    # on an internal endpoint (no trunk).
    m.step(StepRecord("ghost", "t", 1, "s", StepKind.PLAY, StepResult.PLAYED, None, NOW, -1.0))
    m.step(
        StepRecord(
            "ghost",
            "t",
            2,
            "s",
            StepKind.ATTEMPT,
            StepResult.BUSY,
            None,
            NOW,
            0.0,
            destination="desk",
            dial_status=DialStatus.BUSY,
        )
    )
    m.call_answered(CallAnswered("ghost", "t", NOW, "s", "desk", None, None))
    m.call_ended(i, Outcome(OutcomeKind.HANGUP, None), NOW - timedelta(seconds=5))
    assert value(m, "callflow_step_duration_seconds_count", kind="play") == 1
    assert value(m, "callflow_step_duration_seconds_sum", kind="play") == 0
    assert value(m, "callflow_call_answer_seconds_count", flow="t") is None
    assert value(m, "callflow_call_duration_seconds_sum", flow="t", outcome="hangup") == 0


def test_probes_are_read_at_scrape_time_and_a_failing_one_is_left_out() -> None:
    state = {"connected": False, "reconnects": 0, "spool": 0}

    def broken() -> int:
        raise RuntimeError("gone")

    m = Metrics(
        Probes(
            ari_connected=lambda: state["connected"],
            ari_reconnects=lambda: state["reconnects"],
            recorder_spool_size=lambda: state["spool"],
            recorder_queue_depth=broken,
        )
    )
    assert value(m, "callflow_ari_connected") == 0
    state.update(connected=True, reconnects=3, spool=120)
    assert value(m, "callflow_ari_connected") == 1
    assert value(m, "callflow_ari_reconnects_total") == 3
    assert value(m, "callflow_recorder_spool_size") == 120
    assert value(m, "callflow_recorder_queue_depth") is None
    assert value(m, "callflow_ami_connected") is None  # no probe: left out


def test_trunk_up_is_evidence_only() -> None:
    health = TrunkHealth(["a", "b", "c", "d"], clock=lambda: NOW)
    health.resync(
        [
            ContactUpdate("a", "sip:a", TrunkState.REACHABLE, 12.0),
            ContactUpdate("b", "sip:b", TrunkState.UNREACHABLE),
            ContactUpdate("d", "sip:d", TrunkState.REACHABLE, 30.0),
        ]
    )
    sel = HealthAwareSelector(health, failure_threshold=1, monotonic=lambda: 0.0)
    from callflow.telephony import DialStatus

    sel.report("d", DialStatus.CONGESTION)  # breaker opens on d
    m = Metrics(Probes(trunks=sel.snapshot, trunk_feed_live=lambda: health.live))
    assert value(m, "callflow_trunk_up", trunk="a") == 1
    assert value(m, "callflow_trunk_up", trunk="b") == 0
    assert value(m, "callflow_trunk_up", trunk="c") is None  # unknown: no evidence
    assert value(m, "callflow_trunk_up", trunk="d") == 0
    assert value(m, "callflow_trunk_state", trunk="c", state="unknown") == 1
    assert value(m, "callflow_trunk_state", trunk="c", state="reachable") == 0
    assert value(m, "callflow_trunk_breaker_open", trunk="d") == 1
    assert value(m, "callflow_trunk_rtt_seconds", trunk="a") == pytest.approx(0.012)
    assert value(m, "callflow_trunk_rtt_seconds", trunk="b") is None
    assert value(m, "callflow_trunk_feed_live") == 1


def test_callback_backlog_series_follow_the_last_refresh() -> None:
    m = Metrics()
    assert value(m, "callflow_callbacks_pending", tier="2") is None
    m.set_callback_backlog(CallbackBacklog({"2": 4, "none": 1}, {"2": 1}, 5000.0))
    assert value(m, "callflow_callbacks_pending", tier="2") == 4
    assert value(m, "callflow_callbacks_overdue", tier="none") == 0
    assert value(m, "callflow_callbacks_oldest_pending_seconds") == 5000
    m.set_callback_backlog(CallbackBacklog({}, {}, 0.0))
    assert value(m, "callflow_callbacks_pending", tier="2") is None
    m.callback_completed("t", None, 600.0)
    assert value(m, "callflow_callbacks_completed_total", flow="t", tier="none") == 1
    assert value(m, "callflow_callback_completion_delay_seconds_sum", tier="none") == 600


async def full_metrics() -> Metrics:
    """Every metric with at least one series."""
    snap = [
        TrunkSnapshot("trunk-a", TrunkState.REACHABLE, 12.5, NOW, 0, False),
        TrunkSnapshot("trunk-b", TrunkState.UNKNOWN, None, None, 2, True),
    ]

    class Cal:
        flow, calendar, open, overridden = "t", "office", True, False

    always: Callable[[], Any] = lambda: 1  # noqa: E731
    m = Metrics(
        Probes(
            ari_connected=lambda: True,
            ari_reconnects=always,
            ari_recoveries=always,
            ami_connected=lambda: False,
            ami_reconnects=always,
            recorder_queue_depth=always,
            recorder_spool_size=always,
            recorder_database_up=lambda: True,
            recorder_dropped=always,
            recorder_rejected=always,
            recorder_written=always,
            trunks=lambda: snap,
            trunk_feed_live=lambda: True,
            calendars=lambda: [Cal()],
            flows_loaded=always,
        )
    )
    await run(m, Scenario(digits=["1"], down={"trunk-b"}))
    await run(m, Scenario(digits=["2"], no_answer={"dr-a", "dr-b"}))
    await run(m, Scenario(digits=[], hangup_after_prompts=0))
    m.set_callback_backlog(CallbackBacklog({"2": 1}, {"2": 1}, 20000.0))
    m.callback_completed("t", 2, 3600.0)
    return m


async def test_no_label_holds_a_caller_number_or_a_call_id() -> None:
    m = await full_metrics()
    text = m.render().decode()
    assert CALLER not in text and "sim-" not in text
    labels = {
        part.split("=")[0]
        for line in text.splitlines()
        if "{" in line and not line.startswith("#")
        for part in line[line.index("{") + 1 : line.index("}")].split(",")
    }
    assert labels <= {"flow", "outcome", "step", "kind", "tier", "result", "trunk", "state"} | {
        "driver",
        "calendar",
        "le",
        "version",
    }


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def test_promtool_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if in_ci():
            pytest.fail("promtool is missing: apt-get install prometheus (Debian)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    text = asyncio.run(full_metrics()).render()
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    report = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0, report
    assert report.strip() == "", report  # no lint warning either
