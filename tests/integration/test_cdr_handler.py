"""What ``[callflow-hangup]`` (asterisk-conf/callflow/extensions_callflow.conf) writes into
a call's CDR, read back from the file the daemon imports (cdr_custom_callflow.conf): the
number dialled, who hung up (caller, peer or pbx), what the dialplan fallback did, and
whether a caller who reached a voicemail left a message (``[callflow-voicemail-status]``).
The daemon's after-crash check and CDR import read nothing else, so each value is checked
on a real call, as Asterisk writes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    AGI_PATIENT_IP,
    CDR_FILE,
    SANDBOX_ROOT,
    Bench,
    Daemon,
    asterisk_cli,
    wait_trunk,
    wait_until,
)

INBOX = SANDBOX_ROOT / "var/spool/asterisk/voicemail/default/200/INBOX"  # the bench's box


_INCOMING = ("callflow-from-trunk", "callflow-voicemail", "callflow-fallback")


def _size() -> int:
    return CDR_FILE.stat().st_size if CDR_FILE.exists() else 0


def _incoming_since(offset: int) -> list[dict[str, Any]]:
    """The CDRs written after ``offset`` for calls from the operators: ended in
    [callflow-from-trunk], in [callflow-voicemail] (a flow's voicemail step), or in
    [callflow-fallback] when the daemon was away."""
    if not CDR_FILE.exists():
        return []
    with CDR_FILE.open("rb") as fh:
        fh.seek(offset)
        data = fh.read().decode(errors="replace")
    # Only whole lines: Asterisk may be writing the last one.
    lines = data.split("\n")[:-1]
    rows = [json.loads(line) for line in lines if line.strip()]
    return [r for r in rows if r.get("dcontext") in _INCOMING]


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


def _messages() -> set[str]:
    return {p.name for p in INBOX.glob("msg*.txt")} if INBOX.exists() else set()


@pytest.fixture
def inbox() -> Iterator[set[str]]:
    """The messages of mailbox 200 before the test; the test's own are deleted after it
    (the box holds 100 at most, and the sandbox outlives a run)."""
    before = _messages()
    yield before
    for name in _messages() - before:
        for f in INBOX.glob(name.removesuffix(".txt") + ".*"):
            f.unlink(missing_ok=True)


def test_a_voicemail_without_a_message_is_logged_as_missed(
    tmp_path: Path, flows_dir: Path, bench: Bench, inbox: set[str]
) -> None:
    # Two callers press 6 (bench.yaml's voicemail step): the daemon logs both "voicemail"
    # as it hands them over.  The first stays on the line (SIPp sends no audio, so
    # VoiceMail() ends the message itself after 4 s of nothing: a message all the same);
    # the second hangs up during the greeting and left none: its CDR says so, and the
    # daemon then logs it as a missed call.
    # Debian's app_voicemail_odbc.so, declining beside app_voicemail.so, unregisters
    # VoiceMail(): modules_callflow.conf noloads it.
    assert "Info about Application 'VoiceMail'" in asterisk_cli("core show application VoiceMail")
    daemon = Daemon(tmp_path / "d", flows_dir, cdr=True)
    daemon.start()
    try:
        offset = _size()
        patient = bench.patient("100", digits="6", wait_ms="1500", hold_ms="60000")
        assert patient.wait(60) == 0, patient.log()  # VoiceMail() hung up, not the caller
        left = _one_cdr(offset)
        assert (left["callflow_voicemail"], left["callflow_hangup"]) == ("SUCCESS", "pbx")
        assert len(_messages() - inbox) == 1  # a message in the box indeed
        offset = _size()
        # 4 s after the key: the greeting and its instructions last about 9 s before the
        # beep (box 200 has no greeting of its own: "the person at 2 0 0 is unavailable").
        patient = bench.patient("100", digits="6", wait_ms="1500", hold_ms="4000")
        assert patient.wait(30) == 0, patient.log()
        gone = _one_cdr(offset)
        # FAILED: hung up in the greeting; NONE: before VoiceMail() began (a slow host).
        assert gone["callflow_voicemail"] in ("FAILED", "NONE"), gone
        assert gone["callflow_hangup"] == "caller"
        assert len(_messages() - inbox) == 1  # no second message

        def outcome(call: str) -> tuple[str, str]:
            rows = daemon.query("SELECT outcome, detail FROM calls WHERE id = ?", call)
            return rows[0] if rows else ("", "")

        wait_until(
            lambda: outcome(gone["uniqueid"])[0] == "abandoned",
            20,
            "the call without a message logged abandoned",
        )
        assert "no message left" in outcome(gone["uniqueid"])[1]
        # Its CDR was written after the first's: that one was read too, and kept.
        assert outcome(left["uniqueid"])[0] == "voicemail"
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]


def test_a_fastagi_caller_who_left_no_message_is_logged_abandoned(
    tmp_path: Path, flows_dir: Path, bench: Bench, inbox: set[str]
) -> None:
    # The same over FastAGI, whose entry pushes no [callflow-hangup]: the voicemail's own
    # handler says who hung up, so the caller's leaving is told from the PBX's.
    daemon = Daemon(tmp_path / "d", flows_dir, cdr=True)
    daemon.start()
    try:
        offset = _size()
        patient = bench.patient(
            "100", ip=AGI_PATIENT_IP, digits="6", wait_ms="1500", hold_ms="4000"
        )
        assert patient.wait(30) == 0, patient.log()
        gone = _one_cdr(offset)
        assert gone["callflow_voicemail"] in ("FAILED", "NONE"), gone
        assert gone["callflow_hangup"] == "caller"

        def outcome() -> tuple[str, str]:
            rows = daemon.query("SELECT outcome, detail FROM calls WHERE id = ?", gone["uniqueid"])
            return rows[0] if rows else ("", "")

        wait_until(lambda: outcome()[0] == "abandoned", 20, "the call logged abandoned")
        assert "the caller hung up" in outcome()[1]
        assert daemon.query("SELECT driver FROM calls WHERE id = ?", gone["uniqueid"]) == [("agi",)]
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
    assert _messages() == inbox


def test_the_fallbacks_voicemail_says_when_the_caller_left_no_message(
    bench: Bench, inbox: set[str]
) -> None:
    # No daemon: the secretariat and the outside secretariat are busy, so the fallback
    # answers and plays "nobody is available" (about 7.5 s) before its voicemail; the
    # caller hangs up 4.5 s after calling, during it (NONE: VoiceMail() had not begun) or,
    # on a slow host, in the voicemail's greeting (FAILED): no message either way.  The
    # trace alone said "voicemail" until now.
    accueil = bench.peer("accueil", "uas-busy.xml")
    trunk = bench.peer("trunk-a", "uas-busy.xml")
    wait_trunk("trunk-a", "online")  # else Dial() skips it and tries trunk-b
    offset = _size()
    patient = bench.patient("100", scenario="patient-hangup-early.xml", hangup_ms="4500")
    assert patient.wait(40) == 0, patient.log()
    assert accueil.wait(40) == 0, accueil.log()
    assert trunk.wait(40) == 0, trunk.log()
    # One CDR per Dial() (both busy), then the last, the one the handlers wrote into.
    wait_until(lambda: any(r["callflow_hangup"] for r in _incoming_since(offset)), 30, "CDRs")
    [cdr] = [r for r in _incoming_since(offset) if r["callflow_hangup"]]
    assert cdr["dcontext"] == "callflow-fallback"
    assert (cdr["callflow_fallback"], cdr["callflow_hangup"]) == (
        "secretariat=BUSY outside=BUSY voicemail dial=BUSY",
        "caller",
    )
    assert cdr["callflow_voicemail"] in ("NONE", "FAILED"), cdr
    assert _messages() == inbox
