"""What ``[callflow-hangup]`` (asterisk-conf/callflow/extensions_callflow.conf) writes into
a call's CDR, read back from the file the daemon imports (cdr_custom_callflow.conf): the
number dialled, who hung up (caller, peer or pbx) and what the dialplan fallback did.
The daemon's after-crash check and CDR import read nothing else, so each value is checked
on a real call, as Asterisk writes it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .harness import CDR_FILE, Bench, Daemon, wait_trunk, wait_until


def _size() -> int:
    return CDR_FILE.stat().st_size if CDR_FILE.exists() else 0


def _incoming_since(offset: int) -> list[dict[str, Any]]:
    """The CDRs written after ``offset`` for calls from the operators: ended in
    [callflow-from-trunk], or in [callflow-fallback] when the daemon was away."""
    if not CDR_FILE.exists():
        return []
    with CDR_FILE.open("rb") as fh:
        fh.seek(offset)
        data = fh.read().decode(errors="replace")
    # Only whole lines: Asterisk may be writing the last one.
    lines = data.split("\n")[:-1]
    rows = [json.loads(line) for line in lines if line.strip()]
    return [r for r in rows if r.get("dcontext") in ("callflow-from-trunk", "callflow-fallback")]


def _one_cdr(offset: int, call: str | None = None) -> dict[str, Any]:
    """The one CDR of the call (``call``: its channel id; None: the only incoming call).
    The daemon's own legs to a trunk enter the trunk's context too: they are told apart
    by their ids ("leg-…")."""

    def rows() -> list[dict[str, Any]]:
        found = _incoming_since(offset)
        if call is not None:
            return [r for r in found if r.get("uniqueid") == call]
        return [r for r in found if not str(r.get("uniqueid", "")).startswith("leg-")]

    # Asterisk writes the CDR when the call ends (batch = no), the handler having run.
    wait_until(rows, 30, "the call's CDR")
    found = rows()
    assert len(found) == 1, found
    return found[0]


def test_the_caller_hung_up(daemon: Daemon, bench: Bench) -> None:
    offset = _size()
    patient = bench.patient("100", hold_ms="1500")  # hangs up during the menu's prompt
    assert patient.wait(30) == 0, patient.log()
    out = daemon.wait_outcome()
    cdr = _one_cdr(offset, out["call"])
    assert (cdr["callflow_dialed"], cdr["callflow_hangup"], cdr["callflow_fallback"]) == (
        "100",
        "caller",
        "",
    )


def test_callflow_hung_up(daemon: Daemon, bench: Bench) -> None:
    # A secretariat that never answers and no trunk: the desk rings out, the forward fails,
    # and the flow says goodbye and hangs up itself (bench.yaml's 'bye').  The secretariat
    # rings rather than being absent: an INVITE to a closed port stays in Asterisk's
    # retransmissions for 32 s and would reach the next test's secretariat instead.
    wait_trunk("trunk-a", "offline")
    wait_trunk("trunk-b", "offline")
    accueil = bench.peer("accueil", "uas-ringout.xml")
    offset = _size()
    patient = bench.patient("100", digits="1", wait_ms="1500", hold_ms="30000")
    out = daemon.wait_outcome(timeout=60)
    assert (out["outcome"], out["step"]) == ("hangup", "bye"), out
    assert patient.wait(30) == 0, patient.log()
    assert accueil.wait(30) == 0, accueil.log()  # rang, then cancelled: a clean end
    cdr = _one_cdr(offset, out["call"])
    assert (cdr["callflow_dialed"], cdr["callflow_hangup"], cdr["callflow_fallback"]) == (
        "100",
        "pbx",
        "",
    )


# No daemon: Stasis() fails and the dialplan fallback rings the secretariat.  The handler
# runs while Dial() is still on whenever the call ends in it (a conversation too: the
# fallback never gets to write the stage's status), so only the Dial()'s status, which
# Asterisk sets at the answer, says whether the secretariat answered.
FALLBACK_ENDS = {
    "the secretariat answered, then hung up": (
        ("uas-answer.xml", {"hangup_ms": "1500"}),
        {"hold_ms": "8000"},
        ("peer", "secretariat dial=ANSWER"),
    ),
    "the secretariat answered, the caller hung up": (
        ("uas-answer.xml", {}),
        {"hold_ms": "3000"},
        ("caller", "secretariat dial=ANSWER"),
    ),
    "the caller gave up while it rang": (
        ("uas-ringout.xml", {}),
        {"scenario": "patient-hangup-early.xml"},
        ("caller", "secretariat dial=CANCEL"),
    ),
}


@pytest.mark.parametrize("case", list(FALLBACK_ENDS))
def test_what_the_fallback_did(bench: Bench, case: str) -> None:
    (scenario, desk), caller, (hangup, trace) = FALLBACK_ENDS[case]
    offset = _size()
    accueil = bench.peer("accueil", scenario, **desk)
    patient = bench.patient("100", **caller)
    assert patient.wait(40) == 0, patient.log()
    assert accueil.wait(40) == 0, accueil.log()
    cdr = _one_cdr(offset)
    assert cdr["dcontext"] == "callflow-fallback"
    assert (cdr["callflow_dialed"], cdr["callflow_hangup"], cdr["callflow_fallback"]) == (
        "100",
        hangup,
        trace,
    )
