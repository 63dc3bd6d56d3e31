"""SIPp load benchmark: the same IVR several ways, on the same Asterisk, in the same run.

    sudo scripts/asterisk-sandbox up            # once (root: the sandbox is a chroot)
    .venv/bin/python benchmarks/load.py [--rates 25,50,100] [--seconds 10]

SIPp (``load/ivr.xml``) places IVR calls at each rate for ``--seconds``: answer, a prompt,
the caller presses 1 after 1 s, the IVR hangs up (the first call comes ``SETTLE`` = 3 s
after the IVR is up, so its start-up jobs are not counted per call).  These IVRs answer
them (``--targets``):

* ``dialplan``: Asterisk alone (Answer, Background, WaitExten): the floor;
* ``reference``: a minimal aiohttp ARI application (``load/reference_app.py``): what any
  ARI program costs;
* ``reference-ws``: the same application with its REST requests over the events websocket,
  as callflow sends them by default (Asterisk carries out one socket's requests one after
  the other): what that transport costs, apart from any daemon;
* ``reference-handler``: the same application entered as callflow's calls are (the digits
  filter and the hangup handler of ``extensions_callflow.conf``): what that dialplan costs
  Asterisk, apart from any daemon;
* ``callflow``: the daemon with its defaults (SQLite call log with its default feed
  interval, INFO log, /metrics on) running
  ``load/flow.yaml``, entered with ``Stasis()``;
* ``callflow-agi``: the same daemon and flow, entered with ``AGI(agi://127.0.0.1:4573/load)``
  (FastAGI: a TCP connection and one res_agi thread in Asterisk per call);
* ``callflow-stdloop``: ``callflow`` on the standard library's event loop
  (``[daemon] event_loop = "asyncio"``) instead of its default uvloop;
* ``callflow-http``: ``callflow`` with its REST requests over HTTP (``[ari] transport =
  "http"``, the pool of ``pool_size`` connections) instead of the events websocket.
* ``door``: every call shed at the door, without ``Stasis()``: straight into the dialplan
  fallback's ``shed`` label (answered, asked to hold, then the secretariat rings), with
  callflow's hangup handler: the floor of what a shed call can cost Asterisk, i.e. how
  fast an overloaded PBX could answer if the daemon's shedding kept calls out of Stasis.

``--rounds N`` runs the targets N times, in reverse order every other round (a machine's
noise then falls on each in turn), and ends with each round's CPU per call and its ratio
to the reference of the same round (the issue's target: callflow's at most the reference's).
Last comes the verdict on issue #11's latency target, round by round: a rate is a target in
a round where the reference completed every call with a p99 answer of at most 100 ms, and
callflow meets it if it did too, with its p99 answer and DTMF→hangup at most 1.5× the
reference's of that round.

Asterisk is restarted before each (target, rate), so no run inherits another's channels.
A secretariat phone (SIPp at accueil's address) answers what the dialplan fallback rings,
as in a practice: a call the daemon sheds reaches a human, not the voicemail.
For each it prints calls placed, answered, completed (the IVR hung up after the key) and
failed, INVITE→answer and DTMF→hangup p50/p99 (SIPp's response-time timers), the CPU the
IVR process used (percent of a core, and milliseconds per call) and Asterisk's, and, for
callflow, the outcomes in its call log: every call placed must be there once, and a call
that was not served must not read as a hangup; for the calls it shed, where the dialplan
fallback left them, from the sandbox's CDRs (``FallbackFate``: the secretariat answered,
the caller gave up, ...), read by the benchmark, not the daemon (its ``[cdr] file`` stays
off, as by default, so its CPU is not charged for reading them).
The machine is noisy: read callflow beside the two baselines of the same run, not alone.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callflow.store.cdr import CdrCall, merge_calls, parse_line  # noqa: E402
from tests.integration.harness import (  # noqa: E402  (the bench's own daemon runner)
    ARI_PASSWORD,
    ARI_URL,
    ARI_USER,
    CDR_FILE,
    SANDBOX_ROOT,
    Bench,
    Daemon,
    asterisk_cli,
    sandbox,
    wait_until,
)

HERE = Path(__file__).resolve().parent / "load"
RTP_END = 29999  # Asterisk's RTP ports 10000-29999; SIPp's media ports start above them
SIPP_MEDIA = 40000
SECRETARIAT_MEDIA = 39000  # the secretariat's SIPp: below the callers', above Asterisk's RTP
SETTLE = 3.0  # seconds between an IVR's start and the first call
NUMBERS = {
    "dialplan": "901",
    "reference": "902",
    "reference-ws": "902",
    "reference-handler": "905",
    "callflow": "903",
    "callflow-agi": "904",
    "callflow-stdloop": "903",
    "callflow-http": "903",
    "door": "906",
}
# The dialplan IVR and the reference's entry, added at run time (not shipped).
DIALPLAN = [
    "901,1,Goto(bench-ivr,s,1) into callflow-from-trunk",
    "902,1,Stasis(bench-ref) into callflow-from-trunk",
    "902,2,Hangup() into callflow-from-trunk",
    "904,1,AGI(agi://127.0.0.1:4573/load) into callflow-from-trunk",
    "904,2,Hangup() into callflow-from-trunk",
    # The reference entered as callflow's calls are (extensions_callflow.conf): what
    # callflow's dialplan and its hangup handler cost Asterisk, apart from the daemon.
    "905,1,Set(CHANNEL(hangup_handler_push)=callflow-hangup,s,1(${FILTER(0-9,${EXTEN})}))"
    " into callflow-from-trunk",
    "905,2,Stasis(bench-ref,${FILTER(0-9,${EXTEN})}) into callflow-from-trunk",
    "905,3,Hangup() into callflow-from-trunk",
    # Shed at the door: the fallback's shed path, as the daemon's shedding sends calls, but
    # without entering Stasis() first.
    "906,1,Set(CHANNEL(hangup_handler_push)=callflow-hangup,s,1(${FILTER(0-9,${EXTEN})}))"
    " into callflow-from-trunk",
    "906,2,Goto(callflow-fallback,s,shed) into callflow-from-trunk",
    "s,1,Answer() into bench-ivr",
    "s,2,Background(vm-intro) into bench-ivr",
    "s,3,WaitExten(5) into bench-ivr",
    "1,1,Hangup() into bench-ivr",
    "t,1,Hangup() into bench-ivr",
]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


@dataclass
class Run:
    target: str
    rate: int
    placed: int
    answer_ms: list[float] = field(default_factory=list)
    hangup_ms: list[float] = field(default_factory=list)
    ivr_cpu: float | None = None  # percent of one core over the run
    ivr_cpu_s: float = 0.0  # CPU seconds the IVR process used
    asterisk_cpu: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    logged: int | None = None
    shed_fates: Counter[str] = field(default_factory=Counter)  # of the calls shed

    @property
    def completed(self) -> int:
        """Calls SIPp saw through (the IVR hung up after the key)."""
        return len(self.hangup_ms)

    @property
    def cpu_per_call(self) -> float:
        return 1000 * self.ivr_cpu_s / max(1, self.placed)

    def row(self) -> str:
        def ms(v: float | None) -> str:
            return "–" if v is None else f"{v:,.0f}"

        a50, a99 = pct(self.answer_ms, 50), pct(self.answer_ms, 99)
        amax = max(self.answer_ms, default=None)  # the issue: no caller waits over 2 s
        h50, h99 = pct(self.hangup_ms, 50), pct(self.hangup_ms, 99)
        cpu = per_call = "–"
        if self.ivr_cpu is not None:
            cpu = f"{self.ivr_cpu:.0f}%"
            per_call = f"{self.cpu_per_call:.1f}"
        failed = self.placed - self.completed
        log = "–"
        if self.logged is not None:
            log = f"{self.logged} " + ", ".join(
                f"{k} {n}" for k, n in sorted(self.outcomes.items())
            )
            if self.shed_fates:
                log += (
                    " (shed, then: "
                    + ", ".join(f"{k} {n}" for k, n in sorted(self.shed_fates.items()))
                    + ")"
                )
        return (
            f"| {self.target} | {self.rate} | {self.placed} | {len(self.answer_ms)} "
            f"| {len(self.hangup_ms)} | {failed} | {ms(a50)} / {ms(a99)} / {ms(amax)} "
            f"| {ms(h50)} / {ms(h99)} "
            f"| {cpu} | {per_call} | {self.asterisk_cpu:.0f}% | {log} |"
        )


HEADER = (
    "| IVR | cps | placed | answered | completed | failed | INVITE→answer p50 / p99 / max ms "
    "| DTMF→hangup p50 / p99 ms | IVR CPU | IVR CPU ms/call | Asterisk CPU "
    "| logged (outcomes) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def restart_asterisk() -> int:
    # Debian's stock rtp.conf (the sandbox's) gives Asterisk the RTP ports 10000-20000; a
    # load run may hold more calls than that, and Asterisk would refuse them (488) before
    # any IVR sees them.  Widen it in the sandbox for the run only.
    rtp = SANDBOX_ROOT / "etc/asterisk/rtp.conf"
    rtp.write_text(re.sub(r"(?m)^rtpend\s*=\s*\d+", f"rtpend={RTP_END}", rtp.read_text()))
    sandbox("restart", timeout=120)
    for line in DIALPLAN:
        asterisk_cli(f"dialplan add extension {line}")
    return int(sandbox("pid", timeout=30).strip())


def sipp(number: str, rate: int, calls: int, workdir: Path) -> tuple[list[float], list[float]]:
    """Place ``calls`` at ``rate``; the times to answer and key-to-hangup (ms) SIPp measured."""
    args = ["sipp", "127.0.0.1:5060", "-sf", str(HERE / "ivr.xml"), "-s", number]
    args += ["-i", "127.0.0.1", "-p", "5070", "-mi", "127.0.0.1", "-mp", str(SIPP_MEDIA)]
    args += ["-r", str(rate), "-m", str(calls), "-l", str(rate * 30), "-nostdin"]
    args += ["-trace_rtt", "-rtt_freq", "1", "-timeout", f"{calls // rate + 90}s"]
    subprocess.run(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answer: list[float] = []
    hangup: list[float] = []
    for f in workdir.glob("ivr_*_rtt.csv"):
        with f.open() as fh:
            for row in csv.DictReader(fh, delimiter=";"):
                target = answer if row.get("rtd_no", "").strip() in ("1", "rtd1") else hangup
                target.append(float(row["response_time_ms"]))
    return answer, hangup


def secretariat(seconds: int, workdir: Path) -> Bench:
    """The practice's secretariat phone (a SIPp UAS at accueil's address: it answers after
    0.5 s and hangs up 1 s later), for the calls the dialplan fallback takes: a shed call
    reaches a human, as in a practice, instead of a voicemail that costs Asterisk more than
    the IVR it was shed from.  Its messages are not traced: at these rates that is disk
    work the benchmark would measure."""
    desk = Bench(workdir)
    desk.peer(
        "accueil",
        "uas-answer.xml",
        media_port=SECRETARIAT_MEDIA,
        lifetime=seconds + 300,
        trace=False,
        hangup_ms="1000",
        keep_running="1",
    )
    return desk


def fates_of(calls: set[str], path: Path, offset: int, timeout: float = 60) -> Counter[str]:
    """Where the dialplan fallback left ``calls``, from the CDRs Asterisk wrote to ``path``
    after ``offset`` (each once its fallback is over: polled up to ``timeout`` s); ``no CDR`` for
    a call whose CDR did not come, ``unknown`` for a trace the parser does not know."""

    def read() -> dict[str, CdrCall]:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
        lines = data[: data.rfind(b"\n") + 1].decode(errors="replace").splitlines()
        parsed = (parse_line(line) for line in lines if line.strip())
        return merge_calls(c for c in parsed if c is not None and c.uniqueid in calls)

    def done() -> bool:
        got = read()
        return all(i in got and got[i].went_to_fallback for i in calls)

    with contextlib.suppress(AssertionError):
        wait_until(done, timeout, "the shed calls' CDRs")
    got = read()
    return Counter("no CDR" if i not in got else str(got[i].fate or "unknown") for i in calls)


def bench(target: str, rate: int, seconds: int, root: Path) -> Run:
    calls = rate * seconds
    work = root / f"{target}-{rate}"
    n = 1
    while work.exists():  # a target named twice (interleaved rounds): a folder each
        n += 1
        work = root / f"{target}-{rate}-{n}"
    work.mkdir()
    ast_pid = restart_asterisk()
    run = Run(target, rate, calls)
    proc: subprocess.Popen[bytes] | None = None
    daemon: Daemon | None = None
    ivr_pid: int | None = None
    desk = secretariat(seconds, work)
    try:
        if target.startswith("reference"):
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "reference_app.py"), ARI_URL, ARI_USER, ARI_PASSWORD]
                + (["websocket"] if target == "reference-ws" else []),
                stdout=subprocess.PIPE,
            )
            assert proc.stdout is not None
            proc.stdout.readline()  # "connected"
            ivr_pid = proc.pid
        elif target.startswith("callflow"):  # the harness's daemon listens for both drivers
            flows = work / "flows"
            flows.mkdir()
            shutil.copy(HERE / "flow.yaml", flows / "load.yaml")
            daemon = Daemon(work / "daemon", flows)
            # Its defaults, not the test bench's debug log; AMI off (no trunk in this IVR).
            os.environ["CALLFLOW_DAEMON_LOG_LEVEL"] = "INFO"
            os.environ["CALLFLOW_FLOWS_DEFAULT"] = "load"
            os.environ["CALLFLOW_AMI_ENABLED"] = "false"
            # The call log's own defaults, not the test harness's quicker database feed
            # (flush_interval 0.2 s, write_timeout 2 s: five feeds a second).
            os.environ["CALLFLOW_DATABASE_FLUSH_INTERVAL"] = "1.0"
            os.environ["CALLFLOW_DATABASE_WRITE_TIMEOUT"] = "10.0"
            loop = "asyncio" if target == "callflow-stdloop" else "uvloop"
            os.environ["CALLFLOW_DAEMON_EVENT_LOOP"] = loop
            rest = "http" if target == "callflow-http" else "auto"
            os.environ["CALLFLOW_ARI_TRANSPORT"] = rest
            daemon.start()
            assert daemon.proc is not None
            ivr_pid = daemon.proc.pid
        # What a process does once at start (the daemon's first-start jobs: retention purge,
        # after-crash check, schema check) is not a cost per call: the CPU is read from
        # SETTLE seconds after the IVR is up, the same for every IVR.
        time.sleep(SETTLE)
        cdr_from = CDR_FILE.stat().st_size if CDR_FILE.exists() else 0
        t0, a0 = time.monotonic(), cpu_seconds(ast_pid)
        i0 = cpu_seconds(ivr_pid) if ivr_pid else 0.0
        run.answer_ms, run.hangup_ms = sipp(NUMBERS[target], rate, calls, work)
        elapsed = time.monotonic() - t0
        run.asterisk_cpu = 100 * (cpu_seconds(ast_pid) - a0) / elapsed
        if ivr_pid:
            run.ivr_cpu_s = cpu_seconds(ivr_pid) - i0
            run.ivr_cpu = 100 * run.ivr_cpu_s / elapsed
        if daemon is not None:
            d = daemon
            # Every call placed ends up in the log (polled: the journal feeds it); fewer
            # after a minute are reported as such below.
            with contextlib.suppress(AssertionError):
                wait_until(lambda: len(d.outcomes()) >= calls, 60, "the call log")
            ended = d.outcomes()
            run.logged = len(ended)
            run.outcomes = Counter(str(o["outcome"]) for o in ended)
            shed = {str(o["call"]) for o in ended if o["outcome"] == "shed"}
            if shed:
                run.shed_fates = fates_of(shed, CDR_FILE, cdr_from)
    finally:
        if daemon is not None:
            daemon.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        desk.close()
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rates", default="25,50,100", help="calls per second, comma-separated")
    p.add_argument("--seconds", type=int, default=10, help="how long each rate is held")
    p.add_argument("--targets", default="dialplan,reference,callflow,callflow-agi")
    p.add_argument("--keep", type=Path, help="keep each run's files (SIPp traces, daemon log) here")
    p.add_argument("--rounds", type=int, default=1, help="run the targets this many times")
    args = p.parse_args()
    if shutil.which("sipp") is None:
        print("sipp is missing: apt-get install sip-tester", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",")]
    targets = args.targets.split(",")
    unknown = sorted(set(targets) - set(NUMBERS))
    if unknown:
        print(f"unknown targets {unknown}: choose among {sorted(NUMBERS)}", file=sys.stderr)
        return 2
    print(f"# SIPp IVR load, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}")
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="callflow-load-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        runs: list[tuple[int, Run]] = []
        for rate in rates:
            for n in range(1, args.rounds + 1):
                for target in targets if n % 2 else targets[::-1]:
                    run = bench(target, rate, args.seconds, root)
                    runs.append((n, run))
                    print(run.row(), flush=True)
    if args.rounds > 1 or len(runs) > len(set((r.target, r.rate) for _, r in runs)):
        print(summary(runs))
    print(verdict(runs))
    return 0


def summary(runs: list[tuple[int, Run]]) -> str:
    """CPU ms per call by round, and divided by the reference's of the same round."""
    lines = [
        "",
        "| cps | IVR | CPU ms/call by round | mean | ÷ reference, by round |",
        "|---|---|---|---|---|",
    ]
    keys = sorted({(r.rate, r.target) for _, r in runs if r.ivr_cpu is not None})
    for rate, target in keys:
        mine = {n: r.cpu_per_call for n, r in runs if (r.rate, r.target) == (rate, target)}
        ref = {n: r.cpu_per_call for n, r in runs if (r.rate, r.target) == (rate, "reference")}
        ratios = [f"{mine[n] / ref[n]:.2f}" for n in sorted(mine) if ref.get(n)]
        mean = statistics.fmean(mine.values())
        by_round = " / ".join(f"{v:.1f}" for _, v in sorted(mine.items()))
        lines.append(
            f"| {rate} | {target} | {by_round} | {mean:.2f} | {' / '.join(ratios) or '–'} |"
        )
    return "\n".join(lines)


#: Issue #11: a rate is a target where the reference completes every call with a p99 answer
#: within this; callflow must then too, with its p99 answer and DTMF->hangup at most
#: ``BOUND`` x the reference's.
TARGET_MS = 100.0
BOUND = 1.5


def verdict(runs: list[tuple[int, Run]]) -> str:
    """Issue #11's first target, round by round: read against the reference of the same
    round and rate only (the machine's noise moves both; another round's would mislead)."""
    lines = [
        "",
        "| cps | round | reference p99 answer ms | a target rate? | IVR "
        "| p99 answer ÷ reference | DTMF→hangup p99 ÷ reference | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref = {(r.rate, n): r for n, r in runs if r.target == "reference"}
    for n, run in runs:
        base = ref.get((run.rate, n))
        if base is None or not run.target.startswith("callflow"):
            continue
        b99, b_hang = pct(base.answer_ms, 99), pct(base.hangup_ms, 99)
        qualifies = base.completed == base.placed and b99 is not None and b99 <= TARGET_MS
        mine, hang = pct(run.answer_ms, 99), pct(run.hangup_ms, 99)
        ratio = "–" if mine is None or not b99 else f"{mine / b99:.1f}"
        hang_ratio = "–" if hang is None or not b_hang else f"{hang / b_hang:.2f}"
        word = "– (not a target rate in this round)"
        if qualifies and b99 is not None:  # (qualifying implies it: for the type checker)
            met = (
                run.completed == run.placed
                and mine is not None
                and hang is not None
                and b_hang is not None
                and mine <= min(TARGET_MS, BOUND * b99)
                and hang <= BOUND * b_hang
            )
            word = "met" if met else "not met"
        b99_text = "–" if b99 is None else f"{b99:,.0f}"
        lines.append(
            f"| {run.rate} | {n} | {b99_text} | {'yes' if qualifies else 'no'} | {run.target} "
            f"| {ratio} | {hang_ratio} | {word} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
