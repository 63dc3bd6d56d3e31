"""The rules that close the calls a crash left open, and the CDR lines they read."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import as_nobody

from callflow.flow.events import OutcomeKind
from callflow.store.cdr import CdrCall, CdrFile, merge_calls, parse_line, world_readable
from callflow.store.reconcile import OpenCall, reconcile

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)


def cdr(uid: str, **fields: object) -> CdrCall:
    base: dict[str, object] = {
        "uniqueid": uid,
        "linkedid": uid,
        "start": T0,
        "end": T0 + timedelta(seconds=30),
    }
    return CdrCall(**{**base, **fields})  # type: ignore[arg-type]


def decide(
    call: OpenCall,
    *,
    alive: set[str] | None = None,
    cdrs: dict[str, CdrCall] | None = None,
    gone: datetime | None = None,
    settle: float = 5.0,
) -> tuple[OutcomeKind, str] | None:
    gone_since = {} if gone is None else {call.id: gone}
    out = reconcile([call], alive or set(), cdrs or {}, gone_since, NOW, settle)
    assert len(out) <= 1
    return (out[0].outcome, out[0].detail) if out else None


OPEN = OpenCall("c1", T0, step="menu")


def test_a_call_whose_channel_lives_is_not_decided() -> None:
    assert decide(OPEN, alive={"c1"}, cdrs={"c1": cdr("c1", hangup_by="caller")}) is None


def test_the_dialplan_fallback_took_it_recovered_with_what_the_dialplan_did() -> None:
    seen = cdr("c1", fallback="secretariat=NOANSWER outside", disposition="ANSWERED")
    [closing] = reconcile([OPEN], set(), {"c1": seen}, {}, NOW, 5.0)
    assert closing.outcome is OutcomeKind.RECOVERED
    assert "secretariat=NOANSWER outside" in closing.detail
    assert closing.ended == seen.end and closing.step == "menu"


def test_the_caller_hung_up_while_the_daemon_was_down_is_lost_not_abandoned() -> None:
    # A technical failure, not a caller leaving a working line (found in review).
    assert decide(OPEN, cdrs={"c1": cdr("c1", hangup_by="caller")}) == (
        OutcomeKind.LOST,
        "left open by a crash of the daemon; the caller hung up before anyone was reached",
    )


@pytest.mark.parametrize("by", ["pbx", "peer", ""])
def test_ended_by_asterisk_or_a_peer_before_anyone_was_reached_lost(by: str) -> None:
    outcome = decide(OPEN, cdrs={"c1": cdr("c1", hangup_by=by)})
    assert outcome is not None and outcome[0] is OutcomeKind.LOST


def test_no_cdr_waits_settle_seconds_then_lost() -> None:
    assert decide(OPEN) is None  # never seen gone: nothing to say yet
    assert decide(OPEN, gone=NOW - timedelta(seconds=4)) is None
    outcome = decide(OPEN, gone=NOW - timedelta(seconds=6))
    assert outcome is not None and outcome[0] is OutcomeKind.LOST
    assert "no record" in outcome[1]


def test_a_call_reached_before_the_crash_keeps_what_it_reached() -> None:
    talking = OpenCall(
        "c1",
        T0,
        step="desk",
        answered=T0 + timedelta(seconds=3),
        reached=OutcomeKind.FORWARDED,
        destination="telesecretariat",
    )
    [closing] = reconcile([talking], set(), {"c1": cdr("c1", hangup_by="caller")}, {}, NOW, 5.0)
    assert (closing.outcome, closing.destination) == (OutcomeKind.FORWARDED, "telesecretariat")
    assert closing.answered == talking.answered
    assert closing.outcome not in {OutcomeKind.LOST, OutcomeKind.ABANDONED}


def test_every_gone_call_gets_exactly_one_closing() -> None:
    calls = [OpenCall(f"c{i}", T0) for i in range(6)]
    cdrs = {
        "c0": cdr("c0", fallback="secretariat=ANSWER"),
        "c1": cdr("c1", hangup_by="caller"),
        "c2": cdr("c2", hangup_by="pbx"),
    }
    gone = {f"c{i}": NOW - timedelta(minutes=1) for i in range(6)}
    out = reconcile(calls, {"c5"}, cdrs, gone, NOW, 5.0)
    assert sorted(c.call_id for c in out) == ["c0", "c1", "c2", "c3", "c4"]
    kinds = {c.call_id: c.outcome for c in out}
    assert kinds == {
        "c0": OutcomeKind.RECOVERED,
        "c1": OutcomeKind.LOST,
        "c2": OutcomeKind.LOST,
        "c3": OutcomeKind.LOST,
        "c4": OutcomeKind.LOST,
    }


# -- the CDR lines (asterisk-conf/callflow/cdr_custom_callflow.conf) ---------------------

LINE = {
    "uniqueid": "1796270127.0",
    "linkedid": "1796270127.0",
    "sequence": 0,
    "start": 1796270127.623273,
    "answer": 0.0,
    "end": 1796270129.642519,
    "src": "0600000001",
    "dst": "s",
    "dcontext": "callflow-fallback",
    "lastapp": "Dial",
    "disposition": "NO ANSWER",
    "callflow_dialed": "100",
    "callflow_fallback": "secretariat=NOANSWER outside",
    "callflow_hangup": "caller",
}


def test_a_cdr_line_is_read_with_its_marks() -> None:
    c = parse_line(json.dumps(LINE))
    assert c is not None
    assert (c.uniqueid, c.dialed, c.caller, c.hangup_by) == (
        "1796270127.0",
        "100",
        "0600000001",
        "caller",
    )
    assert c.answer is None and c.went_to_fallback
    assert c.start == datetime.fromtimestamp(1796270127.623273, UTC)
    assert c.entered and c.over  # came in by the entry, its hangup handler ran


def test_a_leg_is_no_incoming_call() -> None:
    # An ARI leg (or any channel that did not come in by the shipped entry) has no number
    # dialled: its CDR is never logged as a call of its own.
    leg = parse_line(json.dumps({**LINE, "callflow_dialed": "", "callflow_fallback": ""}))
    assert leg is not None and not leg.entered and not leg.over


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", json.dumps({"uniqueid": ""})])
def test_a_line_that_is_no_cdr_is_skipped(bad: str) -> None:
    assert parse_line(bad) is None


def test_the_cdrs_of_one_call_merge() -> None:
    first = parse_line(json.dumps({**LINE, "callflow_fallback": "", "callflow_hangup": ""}))
    last = parse_line(
        json.dumps({**LINE, "start": LINE["end"], "end": 1796270150.0, "answer": 1796270140.0})
    )
    assert first is not None and last is not None
    [merged] = merge_calls([first, last]).values()
    assert merged.start == first.start and merged.end == last.end
    assert merged.answer == last.answer and merged.fallback == "secretariat=NOANSWER outside"


def test_the_file_is_read_as_it_grows_and_again_after_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "callflow-cdr.json"
    f = CdrFile(path)
    assert f.read_new() == []  # not there yet
    path.write_text(json.dumps(LINE) + "\n" + json.dumps({**LINE, "uniqueid": "2"})[:20])
    assert [c.uniqueid for c in f.read_new()] == ["1796270127.0"]  # half a line waits
    with path.open("a") as out:
        out.write(json.dumps({**LINE, "uniqueid": "2"})[20:] + "\n")
    assert [c.uniqueid for c in f.read_new()] == ["2"]
    assert f.read_new() == []
    path.unlink()
    path.write_text(json.dumps({**LINE, "uniqueid": "3"}) + "\n")  # rotated
    assert [c.uniqueid for c in f.read_new()] == ["3"]


def test_a_file_the_daemons_user_may_not_read_is_said_once_and_read_once_allowed(
    readable_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = readable_folder / "callflow-cdr.json"
    path.write_text(json.dumps(LINE) + "\n")
    path.chmod(0o640)  # Asterisk's file, the daemon's user out of its group
    # As the daemon's user: root reads any file, so the reading runs as nobody.
    reader = f"""
import json, logging
from pathlib import Path
from callflow.store.cdr import CdrFile
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
f = CdrFile(Path({str(path)!r}))
got = [len(f.read_new()), f.problem is None, len(f.read_new()), f.problem]
print(json.dumps(got))
"""
    if os.geteuid() != 0:
        path.chmod(0o000)
    proc = subprocess.run(
        as_nobody([sys.executable, "-c", reader]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(proc.stdout)
    assert got[:3] == [0, False, 0]
    assert got[3].startswith(f"{path}: Permission denied: the daemon's user must be in")
    assert proc.stderr.count("ERROR CDR: cannot read") == 1  # said once, not at each pass
    assert "usermod -a -G asterisk callflow" in proc.stderr
    # Readable again (the user added to the group): read, and said so.
    path.chmod(0o640)
    f = CdrFile(path)
    f.problem = "was unreadable"
    with caplog.at_level(logging.INFO, logger="callflow.store"):
        assert [c.uniqueid for c in f.read_new()] == ["1796270127.0"]
    assert f.problem is None and "can be read again" in caplog.text


def test_a_cdr_file_anyone_may_read_is_warned_of_once(
    readable_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = readable_folder
    path = folder / "callflow-cdr.json"
    path.write_text(json.dumps(LINE) + "\n")
    path.chmod(0o644)
    assert world_readable(path, path.stat())
    f = CdrFile(path)
    with caplog.at_level(logging.WARNING, logger="callflow.store"):
        assert len(f.read_new()) == 1
        with path.open("a") as out:
            out.write(json.dumps({**LINE, "uniqueid": "2"}) + "\n")
        assert len(f.read_new()) == 1  # the same file: not said again
    assert caplog.text.count("every user of this machine can read it") == 1
    assert f"chmod 750 {folder}" in caplog.text
    folder.chmod(0o750)  # as asterisk-conf/README.md asks
    assert not world_readable(path, path.stat())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="callflow.store"):
        assert len(CdrFile(path).read_new()) == 2
    assert "every user" not in caplog.text
    folder.chmod(0o755)
    path.chmod(0o640)
    assert not world_readable(path, path.stat())


def test_a_path_that_is_no_file_is_told_and_never_read(tmp_path: Path) -> None:
    """A FIFO would block the reading thread, and an empty folder looks like an empty file
    to stat(); both are opened without blocking, seen for what they are, and said."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    for path in (fifo, folder):
        f = CdrFile(path)
        assert f.read_new() == []
        assert f.problem == f"{path}: not a file"
        assert f.probe() == f"{path}: not a file"
    missing_folder = CdrFile(tmp_path / "no-such" / "callflow-cdr.json")
    assert missing_folder.read_new() == []
    assert (missing_folder.problem or "").startswith(f"{tmp_path / 'no-such'}: no such folder")
    not_yet = CdrFile(tmp_path / "callflow-cdr.json")
    assert not_yet.read_new() == [] and not_yet.problem is None and not_yet.probe() is None
