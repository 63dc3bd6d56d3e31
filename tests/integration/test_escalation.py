"""Escalation tiers and the callback queue with real calls: SIPp plays the on-call phones."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import REPO, Bench, Daemon, channels, wait_trunk, wait_until


def test_first_doctor_rings_out_second_does_not_press_third_accepts(
    daemon: Daemon, bench: Bench
) -> None:
    dr_a = bench.peer("dr-a", "uas-ringout.xml")
    dr_b = bench.peer("dr-b", "uas-answer.xml")
    dr_c = bench.peer("dr-c", "uas-answer-press1.xml", press_after_ms="1000", hangup_ms="4000")
    bench.patient("100", digits="3", wait_ms="1500", hold_ms="40000")
    assert dr_c.wait(60) == 0, dr_c.log()
    out = daemon.wait_outcome(timeout=60)
    assert (out["outcome"], out["destination"]) == ("answered", "dr-c")
    rung = [s for s in daemon.steps(out["call"]) if s["kind"] == "attempt"]
    assert [(s["destination"], s["dial_status"], s["attempt"], s["tier"]) for s in rung] == [
        ("dr-a", "NOANSWER", 1, 2),
        ("dr-b", "DECLINED", 2, 2),
        ("dr-c", "ANSWER", 3, 2),
    ]
    assert dr_a.wait(20) == 0, dr_a.log()  # CANCELled when its ring time ran out
    assert "CANCEL sip:" in dr_a.messages()
    assert dr_b.wait(20) == 0, dr_b.log()  # answered, did not press: hung up on
    assert "BYE sip:" in dr_b.messages()
    # Who accepted, and when, is in the call log.
    daemon.stop()
    rows = daemon.query("SELECT destination, tier, started, answered FROM calls")
    assert rows[0][:2] == ("dr-c", 2) and rows[0][3] is not None


def test_caller_hanging_up_while_doctors_ring_stops_every_leg(daemon: Daemon, bench: Bench) -> None:
    dr_a = bench.peer("dr-a", "uas-ringout.xml")
    patient = bench.patient("100", digits="3", wait_ms="1500", hold_ms="2500")
    assert patient.wait(30) == 0, patient.log()
    out = daemon.wait_outcome()
    assert (out["outcome"], out["step"]) == ("abandoned", "oncall")
    assert dr_a.wait(20) == 0, dr_a.log()
    assert "CANCEL sip:" in dr_a.messages()
    wait_until(lambda: not channels(), 10, "no leg left ringing")


def test_callback_is_stored_and_completed(daemon: Daemon, bench: Bench) -> None:
    patient = bench.patient("100", digits="5", wait_ms="1500", hold_ms="8000", caller="0611223344")
    patient.wait(30)
    out = daemon.wait_outcome()
    assert out["outcome"] == "callback"

    def pending() -> list[dict[str, object]]:
        res = daemon.cli("callbacks", "list", "--json")
        return list(json.loads(res.stdout))

    wait_until(lambda: len(pending()) == 1, 10, "the callback request in the call log")
    item = pending()[0]
    assert (item["queue"], item["priority"], item["caller"]) == ("same-day", "high", "0611223344")
    assert item["overdue"] is False
    done = daemon.cli("callbacks", "done", str(item["id"]), "--by", "secretariat")
    assert "done by secretariat" in done.stdout
    assert pending() == []
    again = daemon.cli("callbacks", "done", str(item["id"]), check=False)
    assert again.returncode == 1 and "not pending" in again.stderr


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get("CALLFLOW_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CALLFLOW_TEST_PG_URL is not set (scripts/test starts PostgreSQL)")
        pytest.skip("no PostgreSQL: export CALLFLOW_TEST_PG_URL=$(scripts/postgres up)")
    return url


@pytest.fixture
def pg_daemon(tmp_path: Path, flows_dir: Path, pg_url: str, asterisk: None) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "pg", flows_dir, db_url=pg_url)
    d.start()
    yield d
    postgres("up")
    assert d.stop() == 0


def postgres(action: str) -> str:
    out = subprocess.run(
        [str(REPO / "scripts" / "postgres"), action],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip()


def test_tier_1_reaches_the_emergency_number_with_the_database_stopped(
    pg_daemon: Daemon, bench: Bench
) -> None:
    samu = bench.peer("trunk-b", "uas-answer.xml", hangup_ms="2000")
    wait_trunk("trunk-b", "online")
    postgres("stop")
    try:
        bench.patient("100", digits="4", wait_ms="1500", hold_ms="10000")
        assert samu.wait(40) == 0, samu.log()
        assert "INVITE sip:15@" in samu.messages()
        out = pg_daemon.wait_outcome()
        assert (out["outcome"], out["trunk"], out["destination"]) == (
            "emergency",
            "trunk-b",
            "samu",
        )
        # The emergency number rang before any message: nothing stood in the way.
        log = pg_daemon.log()
        assert log.index("POST /channels ->") < log.index("/play ->", log.index("step=menu"))
    finally:
        postgres("up")
    # The call was spooled while the database was down, and lands once it is back.
    wait_until(
        lambda: (
            "emergency"
            in pg_daemon.cli(
                "report", "--from", "2000-01-01", "--to", "2100-01-01", "--format", "json"
            ).stdout
        ),
        60,
        "the call in PostgreSQL after replay",
    )
