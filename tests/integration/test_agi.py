"""The same flows over FastAGI: real calls entering by AGI(agi://...) in a real Asterisk 22.

The patient calling from ``AGI_PATIENT_IP`` is endpoint ``patient-agi``, whose context
``callflow-from-trunk-agi`` (asterisk-conf/callflow/extensions_callflow.conf) enters the flows
with ``AGI()``; the one from 127.0.0.1 enters them with ``Stasis()``.  The table at the end
runs the same calls through both drivers: the call log must show the same path.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import AGI_PATIENT_IP, Bench, Daemon, Sipp, wait_trunk

ARI_PATIENT_IP = "127.0.0.1"


def path(daemon: Daemon, call_id: str) -> list[tuple[str, str, str, str | None]]:
    """A call's steps as (step, kind, result, trunk or destination): what both drivers share."""
    return [
        (s["step"], s["kind"], s["result"], s["trunk"] or s["destination"])
        for s in daemon.steps(call_id)
    ]


def driver_of(daemon: Daemon, call_id: str) -> str:
    return str(daemon.query("SELECT driver FROM calls WHERE id = ?", call_id)[0][0])


def test_agi_menu_choice_reaches_the_secretariat(daemon: Daemon, bench: Bench) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", ip=AGI_PATIENT_IP, digits="1", wait_ms="1500", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    assert patient.wait(40) == 0, patient.log()
    out = daemon.wait_outcome()
    assert (out["flow"], out["outcome"], out["destination"]) == ("bench", "answered", "secretariat")
    daemon.stop()
    assert driver_of(daemon, out["call"]) == "agi"
    assert path(daemon, out["call"]) == [
        ("welcome", "play", "played", None),
        ("hours", "schedule", "open", None),
        ("menu", "menu", "pressed", None),
        ("desk", "attempt", "answer", "secretariat"),
        ("desk", "dial", "answered", "secretariat"),
    ]
    key = daemon.query("SELECT key FROM call_steps WHERE step = 'menu'")
    assert key == [("1",)]
    rows = daemon.query("SELECT answered FROM calls")
    assert rows[0][0] is not None  # the time the secretariat answered
    # One log for both drivers: the step lines are the engine's, marked with the driver.
    assert "driver=agi" in daemon.log()


def test_agi_daemon_down_the_dialplan_still_reaches_a_human(bench: Bench) -> None:
    # No daemon: nothing listens on 4573, AGI() fails (AGISTATUS=FAILURE) and the dialplan
    # rings the secretariat itself.
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", ip=AGI_PATIENT_IP, hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    assert patient.wait(40) == 0, patient.log()
    assert accueil.messages().count("INVITE sip:") >= 1


def test_agi_sigterm_sends_a_call_in_progress_to_the_dialplan_fallback(
    daemon: Daemon, bench: Bench
) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", ip=AGI_PATIENT_IP, hold_ms="30000")
    daemon.wait_step("hours")
    daemon.signal(signal.SIGTERM)  # stop_grace is 5 s in the bench settings
    assert daemon.proc is not None
    assert daemon.proc.wait(30) == 0
    # The caller was still in the menu: the session closed, AGI() returned, and the
    # dialplan fallback rang the secretariat.
    assert accueil.wait(40) == 0, accueil.log()
    [out] = daemon.outcomes()
    assert (out["outcome"], out["detail"]) == ("failed", "daemon stopped during the call")
    patient.stop()


def test_agi_daemon_killed_during_a_call_the_caller_still_reaches_a_human(
    tmp_path: Path, flows_dir: Path, bench: Bench
) -> None:
    daemon = Daemon(tmp_path / "a", flows_dir)
    daemon.start()
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", ip=AGI_PATIENT_IP, hold_ms="30000")
    try:
        daemon.wait_step("welcome")
        daemon.kill()  # SIGKILL: the kernel closes the AGI connection, AGI() returns
        assert accueil.wait(40) == 0, accueil.log()
    finally:
        patient.stop()


NOBODY = """
version: 1
flow: nobody
numbers: ["300"]
timezone: Europe/Paris
destinations:
  doctor: {endpoint: PJSIP/dr-a, ring: 4s}
start: doctor
steps:
  doctor:
    dial: doctor
"""


def test_agi_flow_reaching_nobody_hands_the_caller_to_the_dialplan_fallback(
    tmp_path: Path, flows_dir: Path, bench: Bench
) -> None:
    # The doctor rings out and the flow has no fallback of its own: the daemon sends the
    # caller to [callflow-fallback], which rings the secretariat on its own.
    (flows_dir / "nobody.yaml").write_text(NOBODY)
    daemon = Daemon(tmp_path / "daemon", flows_dir)
    daemon.start()
    try:
        dr_a = bench.peer("dr-a", "uas-ringout.xml")
        accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1000")
        patient = bench.patient("300", ip=AGI_PATIENT_IP, hold_ms="40000")
        out = daemon.wait_outcome(timeout=60)
        assert (out["flow"], out["outcome"]) == ("nobody", "failed")
        assert dr_a.wait(30) == 0, dr_a.log()
        assert accueil.wait(40) == 0, accueil.log()  # rung by the dialplan, not the daemon
        patient.stop()
        kinds = [(s["kind"], s["result"]) for s in daemon.steps(out["call"])]
        assert kinds == [("attempt", "noanswer"), ("dial", "noanswer"), ("fallback", "none")]
        assert len(daemon.outcomes()) == 1
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
    assert "Traceback" not in daemon.log()


@dataclass(frozen=True)
class Case:
    """One call, set up the same way for both drivers."""

    name: str
    number: str
    peers: Callable[[Bench], list[Sipp]]  # the phones and trunks it will ring
    sets: dict[str, str]
    outcome: tuple[str, str | None]  # (outcome, destination)


def _desk(b: Bench) -> list[Sipp]:
    return [b.peer("accueil", "uas-answer.xml", hangup_ms="1500")]


def _failover(b: Bench) -> list[Sipp]:
    if not any(p.name == "trunk-a" and p.proc.poll() is None for p in b.procs):
        b.peer("trunk-a", "uas-503.xml", keep_running="1")  # for both calls
    trunk_b = b.peer("trunk-b", "uas-answer.xml", hangup_ms="1500")
    wait_trunk("trunk-a", "online")
    wait_trunk("trunk-b", "online")
    return [trunk_b]


def _oncall(b: Bench) -> list[Sipp]:
    return [
        b.peer("dr-a", "uas-answer.xml"),  # answers, does not press: declined
        b.peer("dr-b", "uas-answer-press1.xml", press_after_ms="1000", hangup_ms="4000"),
    ]


TABLE = [
    Case("menu 1: the desk answers", "100", _desk, {"digits": "1"}, ("answered", "secretariat")),
    Case("closed: trunk-a 503, out by trunk-b", "200", _failover, {}, ("forwarded", None)),
    Case(
        "menu 3: dr-a declines, dr-b accepts", "100", _oncall, {"digits": "3"}, ("answered", "dr-b")
    ),
]


@pytest.mark.parametrize("case", TABLE, ids=[c.name for c in TABLE])
def test_the_same_call_takes_the_same_path_over_both_drivers(
    daemon: Daemon, bench: Bench, case: Case
) -> None:
    paths = {}
    for n, (driver, ip) in enumerate((("ari", ARI_PATIENT_IP), ("agi", AGI_PATIENT_IP)), 1):
        peers = case.peers(bench)
        patient = bench.patient(case.number, ip=ip, wait_ms="1500", hold_ms="40000", **case.sets)
        for p in peers:
            assert p.wait(60) == 0, p.log()
        out = daemon.wait_outcome(n, timeout=60)
        patient.stop()
        assert out["outcome"] == case.outcome[0], out
        if case.outcome[1] is not None:
            assert out["destination"] == case.outcome[1], out
        assert driver_of(daemon, out["call"]) == driver
        paths[driver] = path(daemon, out["call"])
    assert paths["agi"] == paths["ari"], paths
    assert len(paths["agi"]) >= 3
