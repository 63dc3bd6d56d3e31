"""Forwarding drills against a real Asterisk, SIPp answering as the télésecrétariat on the
trunk peers: `callflow drill` asks the daemon, which test-calls over trunk-a then trunk-b,
hangs up on answer, never calls the emergency number, and stores the results."""

from __future__ import annotations

import json
import urllib.request

from .harness import Bench, Daemon, wait_trunk, wait_until


def drill(daemon: Daemon, *args: str) -> tuple[int, list[str]]:
    url = daemon.wait_log(r"admin API, /metrics and the page on (http://\S+)").group(1)
    r = daemon.cli("drill", "bench", "--url", url, *args, check=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout.splitlines()


def rows(daemon: Daemon) -> list[tuple[str, str, str, bool, str]]:
    return [
        (dest, trunk, mode, bool(passed), reason)
        for dest, trunk, mode, passed, reason in daemon.query(
            "SELECT destination, trunk, mode, passed, reason FROM drills ORDER BY id"
        )
    ]


def metrics(daemon: Daemon) -> str:
    url = daemon.wait_log(r"admin API, /metrics and the page on (http://\S+)").group(1)
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def test_a_drill_passes_over_both_trunks_and_never_calls_the_emergency_number(
    daemon: Daemon, bench: Bench
) -> None:
    trunk_a = bench.peer("trunk-a", "uas-answer.xml")
    trunk_b = bench.peer("trunk-b", "uas-answer.xml")
    wait_trunk("trunk-a", "online")
    wait_trunk("trunk-b", "online")
    daemon.wait_log(r"trunk-a: \w+ → reachable")
    daemon.wait_log(r"trunk-b: \w+ → reachable")
    code, lines = drill(daemon)
    assert code == 0, lines
    assert [line.split(":")[0] for line in lines] == [
        "PASS bench/telesecretariat via trunk-a",
        "PASS bench/telesecretariat via trunk-b",
        "PASS bench/samu via trunk-b (trunk health only)",
        "PASS bench/samu via trunk-a (trunk health only)",
    ]
    assert "answered in" in lines[0] and "emergency route, no test call" in lines[2]
    # Each peer answered one test call and got Asterisk's BYE at once (then exits 0).
    assert trunk_a.wait(40) == 0, trunk_a.log()
    assert trunk_b.wait(40) == 0, trunk_b.log()
    for peer in (trunk_a, trunk_b):
        invites = [m for m in peer.messages().splitlines() if m.startswith("INVITE sip:")]
        assert invites and all(m.startswith("INVITE sip:0180000000@") for m in invites), invites
    stored = rows(daemon)
    assert [(d, t, m, p) for d, t, m, p, _ in stored] == [
        ("telesecretariat", "trunk-a", "call", True),
        ("telesecretariat", "trunk-b", "call", True),
        ("samu", "trunk-b", "health", True),
        ("samu", "trunk-a", "health", True),
    ]
    text = metrics(daemon)
    assert (
        'callflow_drill_last_result{destination="telesecretariat",flow="bench",mode="call",'
        'trunk="trunk-a"} 1.0' in text
    )


def test_a_silent_trunk_a_fails_its_leg_and_trunk_b_passes(daemon: Daemon, bench: Bench) -> None:
    trunk_b = bench.peer("trunk-b", "uas-answer.xml")
    wait_trunk("trunk-a", "offline")
    wait_trunk("trunk-b", "online")
    code, lines = drill(daemon, "--destination", "telesecretariat")
    assert code == 1, lines
    assert len(lines) == 2, lines
    assert lines[0].startswith("FAIL bench/telesecretariat via trunk-a: ")
    assert lines[1].startswith("PASS bench/telesecretariat via trunk-b: answered in ")
    assert trunk_b.wait(40) == 0, trunk_b.log()
    [(_, _, _, a_passed, a_reason), (_, _, _, b_passed, _)] = rows(daemon)
    assert (a_passed, b_passed) == (False, True)
    assert a_reason and "answered" not in a_reason
    # The page's source says the same, with the last success of each leg.
    status, body = daemon.http("/api/drills")
    assert status == 200, body
    legs = {
        (leg["flow"], leg["destination"], leg["trunk"]): leg for leg in json.loads(body)["legs"]
    }
    leg_a, leg_b = (
        legs[("bench", "telesecretariat", "trunk-a")],
        legs[("bench", "telesecretariat", "trunk-b")],
    )
    assert leg_a["last"]["passed"] is False and leg_a["last_success"] is None
    assert leg_b["last"]["passed"] is True and leg_b["last_success"] is not None
    assert legs[("closed", "telesecretariat", "trunk-a")]["last"] is None  # another flow
    wait_until(
        lambda: 'trunk="trunk-a"} 0.0' in metrics(daemon), 10, "the failed leg in the metrics"
    )
