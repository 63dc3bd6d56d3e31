"""Overload shedding on a real Asterisk: budgets so small that the daemon always counts as
behind.  A new call goes straight back to the dialplan fallback (which rings the
secretariat itself) and is logged ``shed`` with its reason; a call of a ``never_shed``
flow (the practice's emergency line) is still run by the daemon."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Bench, Daemon, channels, wait_until

URGENCES = """\
# The practice's emergency line: never shed, even when the daemon is behind.
version: 1
flow: urgences
numbers: ["300"]
timezone: Europe/Paris
never_shed: true
start: hello
steps:
  hello: {play: beep, next: bye}
  bye: {hangup: {}}
"""

# Any lateness of the event loop at all (1 us) is over budget, and shedding, once started,
# lasts an hour: the daemon sheds every call for the whole test.
OVERLOAD = "[overload]\nmax_loop_lag = 0.000001\nhold = 3600.0\nlag_interval = 0.02\n"


@pytest.fixture
def shedding(tmp_path: Path, flows_dir: Path, asterisk: None) -> Iterator[Daemon]:
    (flows_dir / "urgences.yaml").write_text(URGENCES)
    # It reads the sandbox's CDRs: what the fallback did with the calls it shed.  (Those
    # of the earlier tests' calls that the fallback took alone are imported too.)
    d = Daemon(tmp_path, flows_dir, cdr=True)
    d.config.write_text(d.config.read_text() + OVERLOAD)
    d.start()
    yield d
    code = d.stop()  # the process has exited: its log is complete
    log = d.log()
    assert "Traceback" not in log, log[-4000:]
    assert code == 0, f"daemon exit code {code}\n{log[-3000:]}"


def metric(d: Daemon, line: str) -> bool:
    status, text = d.http("/metrics", token=False)
    return status == 200 and re.search(rf"^{re.escape(line)}$", text, re.M) is not None


def ended(d: Daemon, outcome: str, timeout: float = 30) -> dict[str, Any]:
    """The first call of the log that ended with ``outcome``, once there is one."""

    def found() -> dict[str, Any] | None:
        return next((o for o in d.outcomes() if o["outcome"] == outcome), None)

    wait_until(found, timeout, f"a call logged {outcome}\n{d.log()[-3000:]}")
    got = found()
    assert got is not None
    return got


def test_a_new_call_is_shed_to_the_dialplan_and_an_emergency_call_is_served(
    shedding: Daemon, bench: Bench
) -> None:
    d = shedding
    wait_until(lambda: metric(d, "callflow_shedding 1.0"), 30, "the daemon to start shedding")

    # A patient calls the practice: the dialplan fallback answers the shed call at once,
    # asks the caller to hold, and rings the secretariat (who does not pick up here: the
    # ring lasts SECRETARIAT_RING, 20 s). While it rings, the patient is already answered.
    accueil = bench.peer("accueil", "uas-ringout.xml")
    patient = bench.patient("100", hold_ms="15000")

    def state(prefix: str) -> str | None:
        return next((c["state"] for c in channels() if c["name"].startswith(prefix)), None)

    wait_until(lambda: state("PJSIP/accueil-") == "Ringing", 30, "the secretariat to ring")
    assert state("PJSIP/patient-") == "Up"
    assert patient.wait(40) == 0, patient.log()  # answered, held, hung up: all went well
    assert accueil.wait(40) == 0, accueil.log()  # rang, then cancelled when the patient left
    assert accueil.messages().count("INVITE sip:") == 1
    shed = ended(d, "shed")
    assert (shed["flow"], shed["outcome"], shed["step"]) == ("bench", "shed", None)
    assert shed["detail"].startswith("overload (loop_lag): event-loop lag ")
    assert d.steps(shed["call"]) == []  # the flow never ran
    assert re.search(rf"call={re.escape(shed['call'])} shed \(overload \(loop_lag\)", d.log())

    # Asterisk's CDR then says what the fallback did: the patient hung up while the
    # secretariat rang.  The call log takes it, and keeps the daemon's outcome.
    def fate() -> tuple[Any, ...] | None:
        rows = d.query("SELECT fallback, fallback_fate FROM calls WHERE id = ?", shed["call"])
        return rows[0] if rows and rows[0][1] is not None else None

    wait_until(fate, 30, f"the shed call's fate from its CDR\n{d.log()[-3000:]}")
    assert fate() == ("secretariat dial=CANCEL", "abandoned")

    # The emergency line's call is run by the daemon, shedding or not.
    caller = bench.patient("300", hold_ms="10000")
    assert caller.wait(40) == 0, caller.log()
    served = ended(d, "hangup", 40)
    assert served["flow"] == "urgences"
    assert [(s["step"], s["result"]) for s in d.steps(served["call"])] == [
        ("hello", "played"),
        ("bye", "done"),
    ]
    assert metric(d, 'callflow_calls_shed_total{reason="loop_lag"} 1.0')
    d.stop()
    # Each logged once (the earlier tests' fallback calls aside).
    rows = d.query("SELECT id, outcome FROM calls WHERE outcome != 'fallback' ORDER BY started")
    assert rows == [(shed["call"], "shed"), (served["call"], "hangup")]
