"""Nothing lost across a crash: kill -9 the daemon while calls run, place calls while it is
down, start it again; every call SIPp placed is in the call log once, with an outcome.  And
more of the fault matrix (Asterisk restarted, hostile caller IDs, a DTMF flood): each test
adds its row to the table printed at the end of the run (fault x placed / served / logged /
without outcome / duplicated)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import FAULT_MATRIX
from .harness import Bench, Daemon, Sipp, sandbox, wait_until

MATRIX: list[tuple[str, int, int, int, int, int]] = []


def matrix_row(fault: str, patients: list[Sipp], calls: list[tuple[Any, ...]]) -> None:
    """One row: calls placed (SIPp), served (SIPp ended well), and in the log: the calls,
    those without an outcome, those logged more than once (``calls``: (key, outcome))."""
    served = sum(1 for p in patients if p.proc.poll() == 0)
    keys = [c[0] for c in calls]
    duplicated = len(keys) - len(set(keys))
    missing = sum(1 for c in calls if c[1] is None)
    MATRIX.append((fault, len(patients), served, len(set(keys)), missing, duplicated))


@pytest.fixture(scope="module", autouse=True)
def fault_matrix(request: pytest.FixtureRequest) -> Any:
    """Hands the rows to the run's summary (conftest.py prints the table)."""
    yield
    request.config.stash.setdefault(FAULT_MATRIX, []).extend(MATRIX)


_numbers = itertools.count(1)
_RUN = int(time.time()) % 100_000  # the sandbox's CDR file holds the calls of earlier runs


def caller() -> str:
    """A caller number no other call of the sandbox's CDR file has."""
    return f"07{_RUN:05d}{next(_numbers):03d}"


def log_by_caller(daemon: Daemon, callers: set[str]) -> dict[str, list[tuple[Any, ...]]]:
    """The calls of ``callers`` in the daemon's call log: (id, outcome, detail, destination)."""
    try:
        rows = daemon.query("SELECT caller, id, outcome, detail, destination FROM calls")
    except Exception:  # being written, or not created yet
        return {}
    out: dict[str, list[tuple[Any, ...]]] = {c: [] for c in callers}
    for row in rows:
        if row[0] in out:
            out[row[0]].append(row[1:])
    return out


def all_logged_once_with_an_outcome(daemon: Daemon, callers: set[str]) -> bool:
    log = log_by_caller(daemon, callers)
    return bool(log) and all(len(v) == 1 and v[0][1] is not None for v in log.values())


def test_kill_9_during_calls_then_calls_while_down_every_call_logged_once(
    tmp_path: Path, flows_dir: Path, bench: Bench
) -> None:
    daemon = Daemon(tmp_path / "d", flows_dir, cdr=True)
    daemon.start()
    patients: dict[str, Sipp] = {}
    try:
        bench.peer("accueil", "uas-answer.xml", hangup_ms="2000", keep_running="1")
        # In the menu when the daemon dies: some give up while it is down, some wait.
        give_up = {caller() for _ in range(3)}
        wait = {caller() for _ in range(3)}
        for c in give_up:
            patients[c] = bench.patient("100", caller=c, hold_ms="5000")
        for c in wait:
            patients[c] = bench.patient("100", caller=c, hold_ms="90000")
        started = give_up | wait
        wait_until(
            lambda: len({s["call_id"] for s in daemon.steps() if s["step"] == "welcome"}) >= 6,
            60,
            "the six calls in the flow",
        )
        daemon.kill()  # SIGKILL: the calls stay open in the call log

        # While it is down, the dialplan fallback answers (the secretariat picks up).
        down = {caller() for _ in range(3)}
        for c in down:
            patients[c] = bench.patient("100", caller=c, hold_ms="30000")
        for c in give_up | down:
            assert patients[c].wait(90) == 0, patients[c].log()

        daemon.start(wait=False)  # the same journal and database
        daemon.wait_connected(count=2, timeout=60)
        everyone = started | down
        wait_until(
            lambda: all_logged_once_with_an_outcome(daemon, everyone),
            120,
            f"every call logged once with an outcome: {log_by_caller(daemon, everyone)}\n"
            f"{daemon.log()[-3000:]}",
        )
        for c in wait:
            assert patients[c].wait(90) == 0, patients[c].log()
        log = log_by_caller(daemon, everyone)
        matrix_row(
            "kill -9 the daemon, calls while down, restart",
            list(patients.values()),
            [(c, row[1]) for c, rows in log.items() for row in rows],
        )
        outcomes = {c: log[c][0][1] for c in everyone}
        assert {outcomes[c] for c in down} == {"fallback"}, log
        assert all("dialplan fallback: secretariat" in log[c][0][2] for c in down), log
        assert {outcomes[c] for c in give_up} == {"abandoned"}, log
        assert {outcomes[c] for c in wait} == {"recovered"}, log
        assert {log[c][0][3] for c in wait} == {"secretariat"}, log
    finally:
        for p in patients.values():
            p.stop()
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    assert "Traceback" not in daemon.log(), daemon.log()[-4000:]


# -- more of the fault matrix, under a steady stream of calls ------------------------------

HOSTILE = [
    "0" + "6" * 250,  # very long
    "0'OR'1'='1';DROP",  # SQL
    "$(reboot)&&id;x",  # shell
    "%E2%98%8E%C3%A9%00x",  # unicode and a NUL, escaped in the SIP URI
]


def test_hostile_caller_ids_and_a_dtmf_flood_every_call_logged_once(
    tmp_path: Path, flows_dir: Path, bench: Bench
) -> None:
    daemon = Daemon(tmp_path / "d", flows_dir)  # a fresh call log: every row is ours
    daemon.start()
    patients: list[Sipp] = []
    try:
        bench.peer("accueil", "uas-answer.xml", hangup_ms="1500", keep_running="1")
        for n, number in enumerate(HOSTILE * 2):
            if n % 2:  # a DTMF flood: every key, fast, three rounds
                flood = "1234567890*#" * 3
                sets = {"digits": flood, "digits2": flood, "digits3": flood, "tone_ms": "60"}
                sets |= {"wait2_ms": "1500", "wait3_ms": "1500"}
            else:
                sets = {"digits": "1", "wait_ms": "1500"}
            patients.append(bench.patient("100", caller=number, hold_ms="6000", **sets))
            time.sleep(0.5)  # a steady stream, not a burst
        for p in patients:
            assert p.wait(120) == 0, p.log()

        def rows() -> list[tuple[Any, ...]]:
            try:
                return daemon.query("SELECT id, outcome, caller FROM calls")
            except Exception:  # being written
                return []

        wait_until(
            lambda: len(rows()) == len(patients) and all(r[1] for r in rows()),
            60,
            f"{len(patients)} calls with an outcome in the call log: {rows()}",
        )
        matrix_row("hostile caller IDs and a DTMF flood", patients, [(r[0], r[1]) for r in rows()])
        assert len({r[0] for r in rows()}) == len(patients)  # none logged twice
        callers = {r[2] for r in rows()}
        # As Asterisk hands them over (it cuts at ";", at a NUL and at 80 characters), stored
        # as given: bound, never spliced into SQL; unicode intact.
        assert {"0'OR'1'='1'", "\u260e\u00e9", "$reboot&&id"} <= callers, callers
        text = daemon.log()
        for secret in ("DROP", "reboot", "6" * 20):
            assert secret not in text  # caller numbers are masked in the log
    finally:
        for p in patients:
            p.stop()
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    assert "Traceback" not in daemon.log(), daemon.log()[-4000:]


def test_asterisk_restart_under_load_every_call_logged_once(
    tmp_path: Path, flows_dir: Path, bench: Bench
) -> None:
    # A call placed while Asterisk comes back may reach the dialplan before the daemon is
    # connected again: the fallback answers it, and the daemon logs it from the CDRs.
    daemon = Daemon(tmp_path / "d", flows_dir, cdr=True)
    daemon.start()
    patients: list[Sipp] = []
    callers: set[str] = set()

    def call(**sets: str) -> None:
        number = caller()
        callers.add(number)
        patients.append(bench.patient("100", caller=number, **sets))
        time.sleep(0.5)  # a steady stream, not a burst

    try:
        bench.peer("accueil", "uas-answer.xml", hangup_ms="1500", keep_running="1")
        for _ in range(4):  # in the menu when Asterisk goes
            call(hold_ms="20000")
        wait_until(
            lambda: len({s["call_id"] for s in daemon.steps() if s["step"] == "welcome"}) >= 4,
            60,
            "four calls in the flow",
        )
        sandbox("restart")  # the calls in progress die with it
        for _ in range(2):
            call(digits="1", wait_ms="1500", hold_ms="4000")
        daemon.wait_connected(count=2, timeout=60)
        for _ in range(2):
            call(digits="1", wait_ms="1500", hold_ms="4000")
        for p in patients:
            assert p.wait(120) == 0, p.log()  # every call reached Asterisk

        wait_until(
            lambda: all_logged_once_with_an_outcome(daemon, callers),
            90,
            f"every call logged once with an outcome: {log_by_caller(daemon, callers)}\n"
            f"{daemon.log()[-3000:]}",
        )
        log = log_by_caller(daemon, callers)
        rows = [(c, row[1]) for c, rows in log.items() for row in rows]
        matrix_row("restart Asterisk", patients, rows)
        assert len(rows) == len(patients)  # none logged twice
        # The calls placed after the restart were served as usual.
        assert sum(1 for r in rows if r[1] in ("answered", "fallback")) >= 2, log
    finally:
        for p in patients:
            p.stop()
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
