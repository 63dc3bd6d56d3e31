"""Real calls through a real Asterisk 22: SIPp is the patient, the phones and the trunks."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta
from pathlib import Path

from .harness import (
    FREEPBX_PATIENT_IP,
    Bench,
    Daemon,
    ari,
    channels,
    crash_asterisk,
    sandbox,
    wait_event_filter,
    wait_trunk,
    wait_until,
)


def invites_to(peer_messages: str) -> int:
    return peer_messages.count("INVITE sip:")


def test_menu_choice_reaches_the_secretariat(daemon: Daemon, bench: Bench) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", digits="1", wait_ms="1500", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    assert patient.wait(40) == 0, patient.log()
    out = daemon.wait_outcome()
    assert (out["flow"], out["outcome"], out["destination"]) == ("bench", "answered", "secretariat")
    assert invites_to(accueil.messages()) >= 1
    # The call and each of its steps are in the call log.
    daemon.stop()
    rows = daemon.query("SELECT id, outcome, destination, answered FROM calls")
    assert len(rows) == 1 and rows[0][1:3] == ("answered", "secretariat")
    assert rows[0][3] is not None  # the time the secretariat answered
    steps = daemon.steps(rows[0][0])
    assert [(s["step"], s["kind"], s["result"], s["key"]) for s in steps[:3]] == [
        ("welcome", "play", "played", None),
        ("hours", "schedule", "open", None),
        ("menu", "menu", "pressed", "1"),
    ]
    dialled = [s for s in steps if s["step"] == "desk"]
    assert [(s["kind"], s["destination"], s["dial_status"]) for s in dialled] == [
        ("attempt", "secretariat", "ANSWER"),
        ("dial", "secretariat", "ANSWER"),
    ]


def test_invalid_key_then_valid_key(daemon: Daemon, bench: Bench) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient(
        "100", digits="9", wait_ms="1500", digits2="1", wait2_ms="2500", hold_ms="8000"
    )
    assert accueil.wait(40) == 0, accueil.log()
    patient.wait(40)
    out = daemon.wait_outcome()
    assert (out["outcome"], out["destination"]) == ("answered", "secretariat")
    menu = [s for s in daemon.steps(out["call"]) if s["step"] == "menu"]
    assert [(s["result"], s["key"], s["attempt"]) for s in menu] == [("pressed", "1", 2)]


def test_no_key_takes_the_timeout_path(daemon: Daemon, bench: Bench) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1000")
    patient = bench.patient("100", hold_ms="30000")
    assert accueil.wait(60) == 0, accueil.log()
    patient.wait(60)
    out = daemon.wait_outcome()
    assert (out["outcome"], out["destination"]) == ("answered", "secretariat")
    menu = [s for s in daemon.steps(out["call"]) if s["step"] == "menu"]
    assert [(s["result"], s["key"], s["attempt"]) for s in menu] == [("failed", None, 2)]


def test_caller_hangs_up_during_the_prompt(daemon: Daemon, bench: Bench) -> None:
    patient = bench.patient("100", hold_ms="1500")
    assert patient.wait(30) == 0, patient.log()
    out = daemon.wait_outcome()
    assert (out["outcome"], out["step"]) == ("abandoned", "menu")
    menu = [s for s in daemon.steps(out["call"]) if s["step"] == "menu"]
    assert [(s["kind"], s["result"]) for s in menu] == [("menu", "abandoned")]
    log = daemon.log()
    assert "ERROR" not in log and "Traceback" not in log


def test_after_hours_call_leaves_over_the_trunk(daemon: Daemon, bench: Bench) -> None:
    trunk = bench.peer("trunk-a", "uas-answer.xml", hangup_ms="1500")
    wait_trunk("trunk-a", "online")
    patient = bench.patient("200", hold_ms="8000")
    assert trunk.wait(40) == 0, trunk.log()
    patient.wait(40)
    out = daemon.wait_outcome()
    assert (out["flow"], out["outcome"]) == ("closed", "forwarded")
    assert (out["destination"], out["trunk"]) == ("telesecretariat", "trunk-a")
    assert "INVITE sip:0180000000@" in trunk.messages()


def test_a_freepbx_custom_destination_hands_over_the_dialled_number(
    daemon: Daemon, bench: Bench
) -> None:
    """FreePBX's inbound route keeps the dialled number in ${FROM_DID} and goes to the
    Custom Destination callflow-from-freepbx,s,1 (asterisk-conf/README.md): the number
    still chooses the flow ("200": closed, not the default flow), as from a trunk."""
    trunk = bench.peer("trunk-a", "uas-answer.xml", hangup_ms="1500")
    wait_trunk("trunk-a", "online")
    patient = bench.patient("200", ip=FREEPBX_PATIENT_IP, hold_ms="8000")
    assert trunk.wait(40) == 0, trunk.log()
    patient.wait(40)
    out = daemon.wait_outcome()
    assert (out["flow"], out["outcome"], out["destination"]) == (
        "closed",
        "forwarded",
        "telesecretariat",
    )


def test_unknown_number_goes_to_the_default_flow(daemon: Daemon, bench: Bench) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1000")
    bench.patient("0999", digits="1", wait_ms="1500", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    out = daemon.wait_outcome()
    assert (out["flow"], out["destination"]) == ("bench", "secretariat")


def test_daemon_down_the_dialplan_still_reaches_a_human(bench: Bench) -> None:
    # No daemon: Stasis() fails and the dialplan rings the secretariat itself.
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    assert patient.wait(40) == 0, patient.log()
    assert invites_to(accueil.messages()) >= 1


def test_daemon_killed_during_a_call_the_caller_still_reaches_a_human(
    tmp_path: Path, flows_dir: Path, bench: Bench
) -> None:
    first = Daemon(tmp_path / "a", flows_dir)
    first.start()
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", hold_ms="30000")
    first.wait_step("welcome")
    first.kill()  # SIGKILL: no goodbye, the caller is stranded in the Stasis application
    wait_until(lambda: len(channels()) >= 1, 5, "the stranded caller")
    second = Daemon(tmp_path / "b", flows_dir)
    second.start()
    try:
        second.wait_log(r"recovery: call=\S+ was stranded")
        assert accueil.wait(40) == 0, accueil.log()
        out = second.wait_outcome()
        # Left open by the crash, sent to the fallback after: recovered (not a missed call).
        assert (out["outcome"], out["destination"]) == ("recovered", "secretariat")
        fallback = [s for s in second.steps(out["call"]) if s["kind"] == "fallback"]
        assert [(s["result"], s["destination"]) for s in fallback] == [("answer", "secretariat")]
    finally:
        assert second.stop() == 0
        patient.stop()


def test_asterisk_restart_the_daemon_reconnects(daemon: Daemon, bench: Bench) -> None:
    wait_event_filter()
    patient = bench.patient("100", hold_ms="30000")
    daemon.wait_step("hours")
    sandbox("restart")  # the call in the menu dies with Asterisk
    daemon.wait_connected(count=2, timeout=60)
    wait_event_filter()  # a new Asterisk, a new application: filtered again
    # The call that died with Asterisk is ended and logged, not left waiting for ever.
    # (A clean Asterisk shutdown hangs its channels up first: then it reads as abandoned;
    # a channel that vanished unseen is logged as failed, "call lost".)
    first = daemon.wait_outcome(1, timeout=30)
    assert first["outcome"] in ("abandoned", "failed") and first["step"] == "menu"
    patient.stop()
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1000")
    bench.patient("100", digits="1", wait_ms="1500", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    assert daemon.wait_outcome(2)["destination"] == "secretariat"


def test_reload_with_a_broken_file_keeps_the_old_flows(
    daemon: Daemon, bench: Bench, flows_dir: Path
) -> None:
    bench_file = flows_dir / "bench.yaml"
    good = bench_file.read_text()
    bench_file.write_text(good.replace("dial: secretariat", "dial: nobody"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(r"reload refused: .*bench\.yaml:\d+:\d+: unknown destination 'nobody'")
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1000")
    bench.patient("100", digits="1", wait_ms="1500", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    assert daemon.wait_outcome()["destination"] == "secretariat"
    # A good file is taken.
    bench_file.write_text(good.replace('numbers: ["100"]', 'numbers: ["100", "101"]'))
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(r"flows reloaded \(generation 2\)")


def test_no_channel_is_left_behind(daemon: Daemon, bench: Bench) -> None:
    bench.peer("accueil", "uas-ringout.xml")
    patient = bench.patient("100", digits="1", wait_ms="1500", hold_ms="3000")
    patient.wait(40)
    daemon.wait_outcome()
    wait_until(lambda: not channels(), 15, "no channel left")
    assert not ari("GET", "/bridges")


def test_sigterm_sends_a_call_in_progress_to_the_dialplan_fallback(
    daemon: Daemon, bench: Bench
) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", hold_ms="30000")
    daemon.wait_step("hours")
    daemon.signal(signal.SIGTERM)  # stop_grace is 5 s in the bench settings
    assert daemon.proc is not None
    assert daemon.proc.wait(30) == 0
    # The caller was still in the menu: the dialplan fallback rang the secretariat.
    assert accueil.wait(40) == 0, accueil.log()
    assert invites_to(accueil.messages()) >= 1
    [out] = daemon.outcomes()
    assert (out["outcome"], out["detail"]) == ("failed", "daemon stopped during the call")
    patient.stop()


def test_sigterm_during_a_conversation_leaves_it_to_go_on(daemon: Daemon, bench: Bench) -> None:
    # Found in review: after the stop's grace the conversation was torn down (the bridge
    # destroyed, the secretariat hung up) and the call logged failed.
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="15000")
    patient = bench.patient("100", digits="1", wait_ms="1500", hold_ms="20000")
    try:

        def talking() -> bool:
            return any(len(b.get("channels", [])) == 2 for b in ari("GET", "/bridges") or [])

        wait_until(talking, 30, "the caller and the secretariat in one bridge")
        daemon.signal(signal.SIGTERM)  # stop_grace is 5 s in the bench settings
        assert daemon.proc is not None
        assert daemon.proc.wait(30) == 0
        assert talking(), "the conversation did not survive the daemon's stop"
        # The secretariat hangs up after its 15 s, by itself: the conversation went on;
        # the patient leaves at the end of its own hold.
        assert accueil.wait(40) == 0, accueil.log()
        assert patient.wait(60) == 0, patient.log()
        [out] = daemon.outcomes()
        assert (out["outcome"], out["destination"]) == ("answered", "secretariat")
        dial = [s for s in daemon.steps(out["call"]) if s["kind"] == "dial"]
        assert dial[-1]["detail"] == "the daemon stopped during the conversation: left to go on"
    finally:
        patient.stop()


def test_live_metrics_health_and_overrides(daemon: Daemon, bench: Bench) -> None:
    status, body = daemon.http("/healthz", token=False)
    assert status == 200, body
    # Asterisk's module list read at the connection: one voicemail, VoiceMail() registered.
    daemon.wait_log(r"Asterisk's voicemail: app_voicemail runs")
    assert json.loads(daemon.http("/healthz", token=False)[1])["checks"]["voicemail"] is True
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1000")
    bench.patient("100", digits="1", wait_ms="1500", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    daemon.wait_outcome()
    status, metrics = daemon.http("/metrics", token=False)
    assert status == 200
    assert 'callflow_calls_total{driver="ari",flow="bench",outcome="answered"} 1.0' in metrics
    assert "callflow_ari_connected 1.0" in metrics
    assert "callflow_voicemail_ready 1.0" in metrics
    # Close the always-open calendar by hand: the next call goes after-hours at once.
    tomorrow = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%dT08:00")
    status, body = daemon.http(
        "/api/calendars/bench/always/override",
        method="POST",
        body={"state": "closed", "until": tomorrow},
    )
    assert status in (200, 201), body
    trunk = bench.peer("trunk-a", "uas-answer.xml", hangup_ms="1000")
    wait_trunk("trunk-a", "online")
    bench.patient("100", hold_ms="8000")
    assert trunk.wait(40) == 0, trunk.log()
    out = daemon.wait_outcome(2)
    assert (out["outcome"], out["trunk"]) == ("forwarded", "trunk-a")
    [hours] = [s for s in daemon.steps(out["call"]) if s["step"] == "hours"]
    assert hours["result"] == "closed" and hours["detail"].startswith("override: closed")
    status, _ = daemon.http("/api/calls", token=False)
    assert status == 401


def test_asterisk_crash_the_lost_call_is_logged_as_failed(daemon: Daemon, bench: Bench) -> None:
    patient = bench.patient("100", hold_ms="30000")
    daemon.wait_step("hours")
    # SIGKILL: no hangup event reaches the daemon, the channels just vanish.
    crash_asterisk()
    patient.stop()
    sandbox("up")
    daemon.wait_connected(count=2, timeout=60)
    out = daemon.wait_outcome(1, timeout=30)
    assert (out["outcome"], out["step"]) == ("failed", "menu")
    assert out["detail"].startswith("call lost: channel")


def test_a_voicemail_step_to_a_missing_mailbox_keeps_the_caller(
    daemon: Daemon, bench: Bench
) -> None:
    # Mailbox 299 is not in voicemail.conf: VoiceMail() would hang up on the caller.  The
    # daemon asks Asterisk first (VM_INFO) and takes the step's failed branch: goodbye.
    patient = bench.patient("100", digits="7", wait_ms="1500", hold_ms="20000")
    out = daemon.wait_outcome(timeout=40)
    assert (out["outcome"], out["step"]) == ("hangup", "bye"), out
    assert patient.wait(30) == 0, patient.log()  # the flow hung up, after its goodbye

    def results() -> dict[str, str]:  # the steps reach the database after the spool
        return {s["step"]: s["result"] for s in daemon.steps(out["call"])}

    wait_until(lambda: "bye" in results(), 20, "the call's steps in the call log")
    assert results()["no-box"] == "failed", results()
    assert "voicemail box 299: not in Asterisk's voicemail.conf" in daemon.log()
