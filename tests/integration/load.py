"""The fault matrix's two shared pieces: a steady stream of SIPp calls with a fault injected
when a state is reached (``run_under_load``), and the checks after it (``after``).

One SIPp process places ``calls`` at ``rate`` calls/s (``-r``/``-m``), each with its own
caller number, keys and hold time from an injection file (``sipp/patient-load.xml``).  The
fault is injected when ``trigger()`` holds (polled: e.g. "40 patients in flight"), never
after a sleep.  ``after`` then waits until every caller the run placed is in the call log
with an outcome, and checks the log's truth: one row per call, an outcome each, and every
caller reached a human, voicemail, a callback, the fallback, or hung up.

The rate is ``CALLFLOW_FAULT_RATE`` (20 calls/s, the issue's; this 2-core machine shared
with other jobs held it with the daemon, Asterisk, PostgreSQL and SIPp on it; lower it on
a slower one) and the stream lasts ``CALLFLOW_FAULT_SECONDS`` (5 s: 100 calls a fault).
Each test adds its row to ``CALLFLOW_FAULT_MATRIX_FILE`` (JSON lines) when set;
``benchmarks/fault_matrix.py`` runs the tests and prints the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import platform
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .harness import SIPP_DIR, Daemon, channels, wait_until

# SIPp's error log: a call aborted on a final 5xx to its INVITE, and its From user.
_REFUSED = re.compile(
    r"while expecting '1\d\d' \(index \d+\), received 'SIP/2\.0 5\d\d .*?"
    r"From: \"Patient ([^\"]+)\"",
    re.S,
)
# ... or a call Asterisk took at the SIP layer (100 Trying) in the instant it stopped, then
# never answered: SIPp's CANCEL, a minute later, gets 481 from the restarted Asterisk, which
# never knew it (no channel, no dialplan, no CDR).
_DROPPED = re.compile(
    r"receive timeout on message patient-load:[1-3] [^\n]*?Dead call \S+ \(aborted at index "
    r"[1-3]\), received 'SIP/2\.0 481 [^']*?From: \"Patient ([^\"]+)\"",
)

RATE = float(os.environ.get("CALLFLOW_FAULT_RATE", "20"))
SECONDS = float(os.environ.get("CALLFLOW_FAULT_SECONDS", "5"))
MATRIX_FILE = os.environ.get("CALLFLOW_FAULT_MATRIX_FILE", "")

# Where a caller may end up (issue #12): a human (answered, forwarded, emergency),
# voicemail, a callback, the dialplan fallback (fallback, shed, recovered), or they hung up.
REACHED = frozenset(
    {"answered", "forwarded", "emergency", "voicemail", "callback", "fallback", "shed"}
    | {"recovered", "abandoned"}
)

_RUN = int(time.time()) % 100_000  # the sandbox's CDR file holds the calls of earlier runs
_serial = iter(range(1, 10_000_000))


def callers(n: int) -> list[str]:
    """``n`` caller numbers no other call of the sandbox's CDR file has (digits only)."""
    return [f"07{_RUN:05d}{next(_serial):05d}" for _ in range(n)]


@dataclass(frozen=True)
class Caller:
    """One call of the stream: who calls, the keys pressed 1 s after the answer."""

    number: str  # as written in the SIP URI
    digits: str = "1"  # 1: the secretariat (bench.yaml's menu)
    tone_ms: int = 150
    hold_ms: int = 6000  # stays this long after the keys unless Asterisk hangs up first


@dataclass
class Load:
    """A SIPp UAC placing calls at a rate; its stats file says how many it placed so far."""

    proc: subprocess.Popen[bytes]
    callers: list[Caller]
    workdir: Path
    rate: float

    def _stats(self) -> dict[str, str]:
        files = sorted(self.workdir.glob("patient-load_*_.csv"))
        if not files:
            return {}
        with files[-1].open() as fh:
            rows = list(csv.DictReader(fh, delimiter=";"))
        return rows[-1] if rows else {}

    def placed(self) -> int:
        """Calls SIPp has placed so far (its statistics, written every second)."""
        return int(self._stats().get("TotalCallCreated", "0") or 0)

    def failed(self) -> int:
        return int(self._stats().get("FailedCall(C)", "0") or 0)

    def refused(self) -> set[str]:
        """Caller numbers whose INVITE Asterisk refused (a 5xx before any answer, e.g. 503
        while it shuts down) or dropped as it stopped (no answer at all, then unknown to the
        Asterisk that came back): no channel, no dialplan, no CDR: nothing to log."""
        out: set[str] = set()
        for f in self.workdir.glob("patient-load_*_errors.log"):
            text = f.read_text(errors="replace")
            out.update(m.group(1) for m in _REFUSED.finditer(text))
            out.update(m.group(1) for m in _DROPPED.finditer(text))
        return out

    def wait_placed(self, n: int, timeout: float = 60) -> None:
        wait_until(lambda: self.placed() >= n, timeout, f"SIPp to place {n} calls")

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"SIPp still placing calls after {timeout} s") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_load(workdir: Path, stream: list[Caller], rate: float = RATE) -> Load:
    """Start placing ``stream`` at ``rate`` calls/s, from 127.0.0.1 (endpoint ``patient``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    inf = workdir / "callers.csv"
    lines = ["SEQUENTIAL"] + [f"{c.number};{c.digits};{c.tone_ms};{c.hold_ms}" for c in stream]
    inf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    longest = max(c.hold_ms for c in stream) / 1000
    args = ["sipp", "127.0.0.1:5060", "-sf", str(SIPP_DIR / "patient-load.xml"), "-s", "100"]
    args += ["-inf", str(inf), "-i", "127.0.0.1", "-p", "5069", "-mi", "127.0.0.1"]
    args += ["-mp", "30000", "-r", f"{rate:g}", "-m", str(len(stream))]
    args += ["-l", str(int(rate * 60) + 10), "-nostdin", "-trace_stat", "-fd", "1"]
    args += ["-trace_err", "-timeout", f"{len(stream) / rate + longest + 120:.0f}s"]
    args += ["-timeout_error", "-recv_timeout", "60000"]
    with (workdir / "sipp.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    return Load(proc, stream, workdir, rate)


def patients_in_flight() -> int:
    """The patients' calls Asterisk holds now (ARI)."""
    try:
        return sum(1 for c in channels() if str(c.get("name", "")).startswith("PJSIP/patient-"))
    except OSError:  # Asterisk is away
        return 0


def run_under_load(
    workdir: Path,
    stream: list[Caller],
    fault: Callable[[Load], None],
    trigger: Callable[[], bool] | None = None,
    rate: float = RATE,
) -> Load:
    """Place ``stream`` at ``rate``; once ``trigger()`` holds (default: two seconds' worth of
    patients in flight), run ``fault(load)`` (which may wait for states of its own, e.g. more
    calls placed while the daemon is down, and undo the fault); wait until SIPp is done."""
    load = start_load(workdir, stream, rate)
    in_flight = max(2, int(rate * 2))
    try:
        wait_until(
            trigger or (lambda: patients_in_flight() >= in_flight),
            90,
            f"the fault's moment ({in_flight} patients in flight)",
            interval=0.05,
        )
        fault(load)
        longest = max(c.hold_ms for c in stream) / 1000
        load.wait(len(stream) / rate + longest + 150)
    finally:
        load.stop()
    return load


# -- after the fault ----------------------------------------------------------------------


def log_rows(daemon: Daemon, pg_url: str | None = None) -> list[tuple[Any, ...]]:
    """(id, caller, outcome, detail) of every call in the daemon's call log."""
    sql = "SELECT id, caller, outcome, detail FROM calls"
    if pg_url is None:
        try:
            return daemon.query(sql)
        except Exception:  # being written, or not created yet
            return []
    return pg_query(pg_url, sql)


def pg_query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on PostgreSQL (``postgresql+asyncpg://`` URL); [] while it is down."""
    import asyncpg

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    try:
        return asyncio.run(asyncio.wait_for(run(), 10))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return []


@dataclass
class Row:
    """One row of the fault matrix."""

    fault: str
    rate: float
    placed: int  # calls SIPp placed that Asterisk took (not refused outright)
    served: int  # calls whose caller reached someone or something, or hung up (REACHED)
    logged: int  # calls in the call log
    without_outcome: int
    duplicated: int  # calls logged more than once
    sipp_failed: int  # calls SIPp counted failed (e.g. cut by a restarted Asterisk)
    refused: int = 0  # calls Asterisk refused (5xx) or dropped as it stopped: not placed
    outcomes: dict[str, int] = field(default_factory=dict)
    date: str = ""
    machine: str = ""


def _ours(rows: Iterable[tuple[Any, ...]], placed: set[str] | None) -> list[tuple[Any, ...]]:
    return [r for r in rows if placed is None or r[1] in placed]


def after(
    fault: str,
    daemon: Daemon,
    load: Load,
    *,
    logged_as: Callable[[str], str] = lambda number: number,
    every_row_ours: bool = False,
    excused: Callable[[tuple[Any, ...]], bool] = lambda row: False,
    pg_url: str | None = None,
    refusals_allowed: bool = False,
    timeout: float = 120,
) -> Row:
    """The checks after a fault, and its row of the matrix.

    Waits until as many calls as SIPp placed are in the log with an outcome, then asserts:
    every call placed is logged (matched by caller: ``logged_as`` maps the number sent to
    the one Asterisk hands over; ``every_row_ours`` counts every row of a fresh call log
    instead, for numbers Asterisk rewrites), none twice, none without an outcome, and every
    caller reached someone or something or hung up (``excused`` rows aside: a call a fault
    cut off, e.g. with Asterisk itself; they count as not served).  A call Asterisk refused
    outright (a 5xx to the INVITE: ``refusals_allowed``, while it restarts) never existed
    for the PBX: it is counted apart, not as placed.  A call logged ``failed`` that the
    daemon handed to the dialplan fallback (what it does when the link to Asterisk fails,
    README) reached the fallback, unless its log says it could not."""
    sent = load.callers[: load.placed()]
    assert len(sent) == len(load.callers), f"SIPp placed {len(sent)} of {len(load.callers)}"
    refused = load.refused()
    assert not refused or refusals_allowed, f"Asterisk refused calls: {sorted(refused)}"
    placed_numbers = [logged_as(c.number) for c in sent if c.number not in refused]
    placed = len(placed_numbers)
    wanted = None if every_row_ours else set(placed_numbers)
    assert wanted is None or len(wanted) == placed, "caller numbers must be unique"

    def ours() -> list[tuple[Any, ...]]:
        return _ours(log_rows(daemon, pg_url), wanted)

    def settled() -> bool:
        rows = ours()
        return len(rows) >= placed and all(r[2] is not None for r in rows)

    with contextlib.suppress(AssertionError):  # the assertions below say what is wrong
        wait_until(settled, timeout, "every call placed in the call log with an outcome", 0.5)
    rows = ours()
    text = daemon.log()

    def served(r: tuple[Any, ...]) -> bool:
        if r[2] in REACHED:
            return True
        to_fallback = r[2] == "failed" and str(r[3]).startswith("PBX link failed")
        return to_fallback and f"call={r[0]} could not reach the dialplan fallback" not in text

    per_call = Counter(r[1] for r in rows) if wanted is not None else Counter(r[0] for r in rows)
    outcomes = Counter(str(r[2]) for r in rows)
    row = Row(
        fault=fault,
        rate=load.rate,
        placed=placed,
        served=sum(1 for r in rows if served(r)),
        refused=len(refused),
        logged=len(per_call),
        without_outcome=sum(1 for r in rows if r[2] is None),
        duplicated=sum(1 for n in per_call.values() if n > 1),
        sipp_failed=load.failed(),
        outcomes=dict(sorted(outcomes.items())),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{platform.node()}, {os.cpu_count()} cores",
    )
    record(row)
    detail = f"{row}\n--- daemon log ---\n{text[-3000:]}"
    assert row.logged == placed, f"calls placed but not logged: {detail}"
    assert row.duplicated == 0, f"calls logged twice: {[r for r in rows if per_call[r[1]] > 1]}"
    assert row.without_outcome == 0, f"calls without an outcome: {detail}"
    stranded = [r for r in rows if not served(r) and not excused(r)]
    assert not stranded, f"callers who reached nobody: {stranded}\n{detail}"
    return row


def record(row: Row) -> None:
    """Append ``row`` to the matrix file (``benchmarks/fault_matrix.py`` makes the table of it)."""
    if MATRIX_FILE:
        with open(MATRIX_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
