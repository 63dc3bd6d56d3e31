"""Issue 13 against the real daemon: a call (log level DEBUG) leaves no caller number and
no key pressed in the daemon's log and only owner-only files in its folders; an alias
bomb sent with SIGHUP is refused while calls are answered."""

from __future__ import annotations

import re
import signal
import stat
from pathlib import Path

from tests.unit.test_loader import billion_laughs

from .harness import Bench, Daemon

CALLER = "0611223344"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_real_call_logs_no_number_or_choice_and_leaves_private_files(
    daemon: Daemon, bench: Bench
) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1500")
    patient = bench.patient("100", caller=CALLER, digits="1", wait_ms="1500", hold_ms="8000")
    assert accueil.wait(40) == 0, accueil.log()
    assert patient.wait(40) == 0, patient.log()
    out = daemon.wait_outcome()
    assert out["outcome"] == "answered"
    daemon.stop()
    [(caller,)] = daemon.query("SELECT caller FROM calls")
    assert caller == CALLER  # the number did reach the call log (bench: clear mode)
    log = daemon.log()
    assert "step=menu" in log  # the call's steps were logged
    assert CALLER not in log and CALLER[1:] not in log
    assert not re.search(r"(key|digit|dtmf|press)\w*\W{0,3}1\b", log, re.I)
    var = daemon.workdir / "var"
    assert mode(var) == 0o700 and mode(daemon.db_path) == 0o600
    for p in var.rglob("*"):
        assert mode(p) & 0o077 == 0 or p.name == "trunks.json", f"{p}: {oct(mode(p))}"


def test_an_alias_bomb_dropped_in_the_flows_is_refused_and_calls_go_on(
    daemon: Daemon, bench: Bench, flows_dir: Path
) -> None:
    (flows_dir / "bomb.yaml").write_text(billion_laughs())  # 474 bytes, 9^9 once expanded
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1000")
    daemon.signal(signal.SIGHUP)
    # A call placed right after the SIGHUP is answered and carried through the menu.
    bench.patient("100", digits="1", wait_ms="1500", hold_ms="8000")
    daemon.wait_log(r"reload refused: .*bomb\.yaml:\d+:\d+: more than \d+ alias expansions")
    assert accueil.wait(40) == 0, accueil.log()
    assert daemon.wait_outcome()["destination"] == "secretariat"
