"""Trunk failover with real trunks (SIPp) qualified by a real Asterisk, health over AMI."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from .harness import REPO, Bench, Daemon, sandbox, wait_trunk, wait_until


def attempts(daemon: Daemon) -> list[str]:
    """The trunk attempts of the calls so far, as 'result via trunk', from the call log."""
    return [
        f"{s['result']} via {s['trunk']}"
        for s in daemon.steps()
        if s["kind"] == "attempt" and s["destination"] == "telesecretariat"
    ]


def trunks_cli(daemon: Daemon) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "callflow.cli",
            "trunks",
            "--json",
            "--state-dir",
            str(daemon.workdir / "var"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=True,
    )
    data = json.loads(out.stdout)
    rows = data["trunks"] if isinstance(data, dict) else data
    return {str(r["name"]): r for r in rows}


def test_trunk_a_not_listening_the_call_leaves_by_b(daemon: Daemon, bench: Bench) -> None:
    trunk_b = bench.peer("trunk-b", "uas-answer.xml", hangup_ms="1500")
    wait_trunk("trunk-a", "offline")
    wait_trunk("trunk-b", "online")
    daemon.wait_log(r"trunk-a: \w+ → unreachable")
    # What the daemon knows before the call: once trunk-b's peer hangs up and exits,
    # qualify soon finds trunk-b unreachable too, so its state is read while it lives.
    wait_until(
        lambda: trunks_cli(daemon)["trunk-b"]["state"] == "reachable",
        20,
        "the daemon to see trunk-b reachable",
    )
    bench.patient("200", hold_ms="8000")
    assert trunk_b.wait(40) == 0, trunk_b.log()
    out = daemon.wait_outcome()
    assert (out["outcome"], out["trunk"]) == ("forwarded", "trunk-b")
    assert attempts(daemon) == ["answer via trunk-b"]  # the dead trunk is not even tried
    assert trunks_cli(daemon)["trunk-a"]["state"] == "unreachable"


def test_trunk_a_answering_503_fails_over_to_b(daemon: Daemon, bench: Bench) -> None:
    bench.peer("trunk-a", "uas-503.xml", keep_running="1")
    trunk_b = bench.peer("trunk-b", "uas-answer.xml", hangup_ms="1500")
    wait_trunk("trunk-a", "online")
    wait_trunk("trunk-b", "online")
    bench.patient("200", hold_ms="8000")
    assert trunk_b.wait(40) == 0, trunk_b.log()
    out = daemon.wait_outcome()
    assert (out["outcome"], out["trunk"]) == ("forwarded", "trunk-b")
    assert attempts(daemon) == ["congestion via trunk-a", "answer via trunk-b"]


def test_trunk_a_coming_back_is_used_again(daemon: Daemon, bench: Bench) -> None:
    wait_trunk("trunk-a", "offline")
    daemon.wait_log(r"trunk-a: \w+ → unreachable")
    trunk_a = bench.peer("trunk-a", "uas-answer.xml", hangup_ms="1500")
    daemon.wait_log(r"trunk-a: unreachable → reachable")
    bench.patient("200", hold_ms="8000")
    assert trunk_a.wait(40) == 0, trunk_a.log()
    out = daemon.wait_outcome()
    assert (out["outcome"], out["trunk"]) == ("forwarded", "trunk-a")


def test_far_end_busy_does_not_fail_over(daemon: Daemon, bench: Bench) -> None:
    bench.peer("trunk-a", "uas-busy.xml", keep_running="1")
    trunk_b = bench.peer("trunk-b", "uas-answer.xml", keep_running="1")
    wait_trunk("trunk-a", "online")
    wait_trunk("trunk-b", "online")
    bench.patient("200", hold_ms="8000")
    out = daemon.wait_outcome()
    assert (out["outcome"], out["step"]) == ("hangup", "busy")  # the flow's busy branch
    assert attempts(daemon) == ["busy via trunk-a"]
    assert "INVITE sip:" not in trunk_b.messages()


def test_all_trunks_down_the_call_takes_the_failed_branch(daemon: Daemon, bench: Bench) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    wait_trunk("trunk-a", "offline")
    wait_trunk("trunk-b", "offline")
    daemon.wait_log(r"trunk-b: \w+ → unreachable")
    bench.patient("200", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    out = daemon.wait_outcome()
    assert (out["outcome"], out["destination"]) == ("answered", "secretariat")
    steps = daemon.steps(out["call"])
    [forward] = [s for s in steps if s["step"] == "after-hours" and s["kind"] == "forward"]
    assert (forward["result"], forward["trunk"]) == ("chanunavail", None)


def test_ami_dropped_and_restored_resynchronises_trunk_state(daemon: Daemon, bench: Bench) -> None:
    trunk_a = bench.peer("trunk-a", "uas-answer.xml", keep_running="1")
    wait_trunk("trunk-a", "online")
    daemon.wait_log(r"trunk-a: \w+ → reachable")
    # trunk-a dies while Asterisk is down, so that no qualify before the drop can see it:
    # only the AMI session that comes back can tell the daemon.
    sandbox("stop")  # AMI and ARI drop
    trunk_a.stop()
    sandbox("up")
    daemon.wait_connected(count=2, timeout=60)

    def after_relogin() -> str:
        parts = daemon.log().split("AMI: logged in")
        return "".join(parts[2:])  # however many times it logged in again

    wait_until(
        lambda: re.search(r"trunk trunk-a: \w+ → unreachable", after_relogin()) is not None,
        30,
        "trunk-a unreachable after the AMI session came back",
    )
    assert trunks_cli(daemon)["trunk-a"]["state"] == "unreachable"
