"""The real-call bench: the daemon as a process, SIPp peers as processes, Asterisk's CLI.

Every process started here is stopped by the fixture that started it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from callflow.ari.client import CLIENT_EVENTS
from callflow.ari.service import EVENT_TYPES
from callflow.store.spool import decode_line

REPO = Path(__file__).resolve().parents[2]
SANDBOX = REPO / "scripts" / "asterisk-sandbox"
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
ARI_URL = "http://127.0.0.1:8088"
ARI_USER = "callflow"
ARI_PASSWORD = "callflow-test"
AMI_SECRET = "callflow-test"
API_TOKEN = "bench-token-0123456789abcdef"
AGI_LISTEN = "127.0.0.1:4573"  # the port of extensions_callflow.conf's AGI() entries
# The patient whose calls enter over FastAGI (endpoint patient-agi, callflow-from-trunk-agi).
AGI_PATIENT_IP = "127.0.0.5"
# The patient whose calls come as FreePBX hands them over (endpoint patient-freepbx: the
# number in ${FROM_DID}, then the Custom Destination callflow-from-freepbx,s,1).
FREEPBX_PATIENT_IP = "127.0.0.6"
# The CDRs the sandbox's Asterisk writes (cdr_custom_callflow.conf), seen from the host.
SANDBOX_ROOT = Path(
    os.environ.get("CALLFLOW_SANDBOX_ROOT")
    or Path(os.environ.get("CALLFLOW_SANDBOX") or REPO / ".sandbox") / "asterisk-root"
)
CDR_FILE = SANDBOX_ROOT / "var/log/asterisk/cdr-custom/callflow-cdr.json"

# Address plan (tests/integration/asterisk/pjsip_callflow.conf).
PEERS = {
    "trunk-a": ("127.0.0.2", 5081),
    "trunk-b": ("127.0.0.3", 5082),
    "accueil": ("127.0.0.11", 5091),
    "dr-a": ("127.0.0.12", 5092),
    "dr-b": ("127.0.0.13", 5093),
    "dr-c": ("127.0.0.14", 5094),
}
# SIPp's media ports: above Debian's stock RTP range of Asterisk (rtp.conf 10000-20000).
_media_ports = iter(range(20010, 29010, 10))


def ari(method: str, path: str, url: str = ARI_URL) -> Any:
    req = urllib.request.Request(f"{url}/ari{path}", method=method)
    token = b64encode(f"{ARI_USER}:{ARI_PASSWORD}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def events_allowed(app: str = "callflow", url: str = ARI_URL) -> set[str]:
    """The event types Asterisk sends ``app`` (its event filter; empty: every type)."""
    return {str(e["type"]) for e in ari("GET", f"/applications/{app}", url)["events_allowed"]}


def wait_event_filter(url: str = ARI_URL, timeout: float = 20) -> None:
    """Wait until Asterisk sends the daemon's application only what the daemon reads (the
    call service sets the filter after each connection)."""
    want = EVENT_TYPES | CLIENT_EVENTS
    wait_until(lambda: events_allowed(url=url) == want, timeout, f"events_allowed == {want}")


def endpoint_state(name: str) -> str:
    """ARI's state of a PJSIP endpoint: 'online' once qualify reached a contact."""
    return str(ari("GET", f"/endpoints/PJSIP/{name}").get("state", "unknown"))


# A qualify ping sent just before a SIPp trunk started (or stopped) can still report the
# old state one cycle later (bench: qualify_frequency 2 s, qualify_timeout 1 s).
QUALIFY_SETTLE = 3.5


def wait_trunk(name: str, state: str, timeout: float = 20) -> None:
    """Wait until Asterisk's qualify has said ``state`` for a whole qualify cycle."""
    since: list[float] = []

    def steady() -> bool:
        if endpoint_state(name) != state:
            since.clear()
            return False
        if not since:
            since.append(time.monotonic())
        return time.monotonic() - since[0] >= QUALIFY_SETTLE

    wait_until(steady, timeout, f"trunk {name} {state} for {QUALIFY_SETTLE} s")


def ari_up() -> bool:
    try:
        ari("GET", "/asterisk/info")
        return True
    except OSError:
        return False


def sandbox(*args: str, timeout: float = 600) -> str:
    out = subprocess.run([str(SANDBOX), *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"asterisk-sandbox {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not reaped yet


def crash_asterisk() -> None:
    """SIGKILL the sandbox's own Asterisk (its pid, checked by the sandbox script to be the
    Asterisk of our chroot), never another Asterisk of the host; wait until it is dead."""
    pid = int(sandbox("pid", timeout=30).strip())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _alive(pid), 10, f"the sandbox's Asterisk (pid {pid}) to die")


def asterisk_cli(command: str) -> str:
    return sandbox("cli", command, timeout=30)


def channels() -> list[dict[str, Any]]:
    result = ari("GET", "/channels")
    return list(result or [])


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


_OUTCOMES = (
    "SELECT id, flow, outcome, end_step, destination, trunk, detail, ended FROM calls "
    "WHERE outcome IS NOT NULL"
)
_OUTCOME_FIELDS = ("call", "flow", "outcome", "step", "destination", "trunk", "detail", "ended")


@dataclass
class Daemon:
    """``callflow run`` in a subprocess, its log in a file the tests read."""

    workdir: Path
    flows_dir: Path
    db_url: str | None = None  # default: a SQLite file in the workdir
    agi: bool = True  # the FastAGI listener too: calls may enter by Stasis() or AGI()
    cdr: bool = False  # import the sandbox's CDRs (every call of earlier tests too)
    # The `callflow` command: this checkout's by default, an installed one's for a wheel.
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "callflow.cli"])
    ari_url: str = ARI_URL  # another Asterisk's (a node of the cluster bench, nodes.py)
    extra_config: str = ""  # more TOML sections (e.g. [ami] host of that Asterisk)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A password never sits in the settings file: it goes to the environment.
        self.db_password = ""
        if self.db_url is not None:
            url = make_url(self.db_url)
            self.db_password = url.password or ""
            self.db_url = url._replace(password=None).render_as_string(hide_password=False)
        self.log_path = self.workdir / "daemon.log"
        self.config = self.workdir / "callflow.toml"
        self.config.write_text(
            "[ari]\n"
            f'url = "{self.ari_url}"\napp = "callflow"\nusername = "{ARI_USER}"\n'
            'password_env = "CALLFLOW_ARI_PASSWORD"\n'
            f'[flows]\ndir = "{self.flows_dir}"\ndefault = "bench"\n'
            '[daemon]\nlog_level = "DEBUG"\nstop_grace = 5.0\nstate_dir = "var"\n'
            f'[database]\nurl = "{self.db_url or "sqlite+aiosqlite:///callflow.db"}"\n'
            'spool_dir = "spool"\nflush_interval = 0.2\nwrite_timeout = 2.0\n'
            '[http]\nlisten = "127.0.0.1:0"\ntoken_file = "api-tokens"\n'
            f'[agi]\nenabled = {"true" if self.agi else "false"}\nlisten = "{AGI_LISTEN}"\n'
            + (
                f'[cdr]\nfile = "{CDR_FILE}"\npoll_interval = 0.5\nsettle = 3.0\n'
                if self.cdr
                else ""
            )
            + self.extra_config
        )
        (self.workdir / "api-tokens").write_text(f"bench:{API_TOKEN}\n")
        self.db_path = self.workdir / "var" / "callflow.db"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A ``callflow`` command with this daemon's settings."""
        env = dict(os.environ, CALLFLOW_DATABASE_PASSWORD=self.db_password)
        return subprocess.run(
            [*self.command, *args, "--config", str(self.config)],
            env=env,
            check=check,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=60,
        )

    def upgrade_db(self) -> None:
        self.cli("db", "upgrade")

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Read the daemon's call log (SQLite) directly."""
        with sqlite3.connect(self.db_path) as db:
            return list(db.execute(sql, args))

    def start(self, wait: bool = True) -> None:
        if self.db_url is not None or not self.db_path.exists():
            self.upgrade_db()
        env = dict(
            os.environ,
            CALLFLOW_ARI_PASSWORD=ARI_PASSWORD,
            CALLFLOW_AMI_SECRET=AMI_SECRET,
            CALLFLOW_DATABASE_PASSWORD=self.db_password,
            PYTHONUNBUFFERED="1",
        )
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.command, "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )
        log.close()
        if wait:
            self.wait_connected()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def connections(self) -> int:
        return self.log().count("ARI events: connected")

    def wait_connected(self, count: int = 1, timeout: float = 20) -> None:
        wait_until(lambda: self.connections() >= count, timeout, "the daemon to connect to ARI")
        # The application is registered once the websocket is up.
        wait_until(lambda: _app_registered(self.ari_url), timeout, "the Stasis application")
        if self.agi:
            self.wait_log(r"FastAGI listening on ", timeout)

    def wait_log(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def check() -> bool:
            m = rx.search(self.log())
            if m:
                found.append(m)
            return m is not None

        wait_until(check, timeout, f"log line /{pattern}/\n--- log ---\n{self.log()[-3000:]}")
        return found[0]

    def http(
        self, path: str, *, token: bool = True, method: str = "GET", body: Any = None
    ) -> tuple[int, str]:
        """A request to the daemon's admin HTTP server (its port is in the log)."""
        m = self.wait_log(r"admin API, /metrics and the page on (http://\S+)")
        req = urllib.request.Request(
            m.group(1) + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
        )
        if token:
            req.add_header("Authorization", f"Bearer {API_TOKEN}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def outcomes(self) -> list[dict[str, Any]]:
        """The calls that ended, in the order they ended, from the daemon's call log: its
        database, and its spool (the write-ahead journal) while the database is away."""
        ended: dict[str, dict[str, Any]] = {}
        for seg in sorted((self.workdir / "var" / "spool").glob("segment-*.jsonl")):
            try:
                data = seg.read_bytes()
            except FileNotFoundError:
                # Replayed and deleted since the glob: the daemon deletes a segment only
                # once it is in the database, which is read below (SQLite; with
                # PostgreSQL this reads the spool alone).
                continue
            for line in data.splitlines(keepends=True):
                try:
                    rec = decode_line(line)
                except ValueError:  # a line being written
                    continue
                if rec.get("t") == "end":
                    row = (rec["id"], rec["flow"], rec["outcome"], rec["end_step"])
                    row += (rec["destination"], rec["trunk"], rec["detail"], rec["ended"])
                    ended[rec["id"]] = dict(zip(_OUTCOME_FIELDS, row, strict=True))
        if self.db_url is None and self.db_path.exists():
            try:
                rows = self.query(_OUTCOMES)
            except sqlite3.OperationalError:  # being written, or not created yet
                rows = []
            for row in rows:
                ended[row[0]] = dict(zip(_OUTCOME_FIELDS, row, strict=True))
        return sorted(ended.values(), key=lambda o: (_utc(o["ended"]), o["call"]))

    def wait_outcome(self, n: int = 1, timeout: float = 30) -> dict[str, Any]:
        wait_until(
            lambda: len(self.outcomes()) >= n,
            timeout,
            f"{n} call outcome(s) in the call log\n--- log ---\n{self.log()[-3000:]}",
        )
        return self.outcomes()[n - 1]

    def steps(self, call_id: str | None = None) -> list[dict[str, Any]]:
        """The steps of a call (of every call when ``call_id`` is None) in the call log."""
        names = ("call_id", "seq", "step", "kind", "result", "key", "attempt", "destination")
        names += ("trunk", "tier", "dial_status", "outcome", "detail")
        sql = f"SELECT {', '.join(names)} FROM call_steps"
        args: tuple[object, ...] = ()
        if call_id is not None:
            sql, args = sql + " WHERE call_id = ?", (call_id,)
        try:
            rows = self.query(sql + " ORDER BY call_id, seq", *args)
        except sqlite3.OperationalError:  # being written, or not created yet
            return []
        return [dict(zip(names, row, strict=True)) for row in rows]

    def wait_step(self, step: str, timeout: float = 20) -> dict[str, Any]:
        """Wait until the call log holds a step named ``step`` (it is recorded as it ends)."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [s for s in self.steps() if s["step"] == step]
            return bool(found)

        wait_until(check, timeout, f"step {step!r} in the call log\n{self.log()[-3000:]}")
        return found[0]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def _utc(value: str) -> datetime:
    """A time from the call log (SQLite text or a spool record), for ordering."""
    t = datetime.fromisoformat(value)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _app_registered(url: str = ARI_URL) -> bool:
    try:
        apps = ari("GET", "/applications", url) or []
        return any(a.get("name") == "callflow" for a in apps)
    except OSError:
        return False


# SIPp's error file: one event per timestamp; a BYE for a call this peer never saw; the
# cumulative failed-call count on its last statistics screen; the Call-ID of each INVITE.
_SIPP_EVENT = re.compile(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: (.*?)(?=\d{4}-\d\d-\d\d\t|\Z)", re.S)
_STRAY_BYE = re.compile(r"Aborting call on an unexpected BYE for call: (\S+)")
_FAILED_CALLS = re.compile(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)")
_INVITE_CALL_ID = re.compile(r"^INVITE [^\n]*\n(?:[^\n]+\n)*?Call-ID: (\S+)", re.M | re.I)


def _udp_bound(ip: str, port: int) -> bool:
    """Whether a UDP socket of this network namespace is bound to ip:port (/proc/net/udp
    writes the IPv4 address as little-endian hex)."""
    hex_ip = "".join(f"{int(b):02X}" for b in reversed(ip.split(".")))
    want = f"{hex_ip}:{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1] == want for line in lines)


@dataclass
class Sipp:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def wait(self, timeout: float = 60) -> int:
        """SIPp's exit code (0: every call passed), once it ended.  A failed call that was
        only a stray BYE of an earlier test's dialog does not count: when a test kills a peer
        mid-call, Asterisk retransmits its BYE to that address for up to a minute, and the
        next test's peer on the same address takes it for a new call and aborts it."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"SIPp {self.name} still running after {timeout} s:\n{self.log()}"
            ) from None
        return 0 if code == 1 and self._failed_only_on_stray_byes() else code

    def _failed_only_on_stray_byes(self) -> bool:
        err = self.log_path.with_suffix(".err")
        events = _SIPP_EVENT.findall(err.read_text(errors="replace")) if err.exists() else []
        ours = set(_INVITE_CALL_ID.findall(self.messages()))
        stray = [m for e in events if (m := _STRAY_BYE.fullmatch(e.strip())) and m[1] not in ours]
        screen = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        failed = _FAILED_CALLS.findall(screen)
        return bool(stray) and len(stray) == len(events) and failed[-1:] == [str(len(stray))]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-4000:]

    def messages(self) -> str:
        p = self.log_path.with_suffix(".msg")
        return p.read_text(errors="replace") if p.exists() else ""


class Bench:
    """Starts SIPp peers for one test and stops them all at its end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Sipp] = []

    def _run(self, name: str, args: list[str], *, trace: bool = True) -> Sipp:
        log_path = self.workdir / f"sipp-{name}-{len(self.procs)}.log"
        msg_path = log_path.with_suffix(".msg")
        # Every SIP message to a file: what the tests read; a load benchmark turns it off.
        msgs = ["-trace_msg", "-message_file", str(msg_path)] if trace else []
        cmd = [
            "sipp",
            *args,
            *msgs,
            "-trace_err",
            "-error_file",
            str(log_path.with_suffix(".err")),
            "-nostdin",
        ]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        s = Sipp(name, proc, log_path)
        self.procs.append(s)
        return s

    def peer(
        self,
        name: str,
        scenario: str,
        *,
        media_port: int | None = None,
        lifetime: int = 90,
        trace: bool = True,
        **sets: str,
    ) -> Sipp:
        """A phone or trunk (SIPp UAS) at its address from the plan, answering per scenario
        (the scenarios end after one call unless ``keep_running`` is set; SIPp quits after
        ``lifetime`` seconds whatever it is doing).  ``sets`` are the scenario's variables."""
        ip, port = PEERS[name]
        args = [
            "-sf",
            str(SIPP_DIR / scenario),
            "-i",
            ip,
            "-p",
            str(port),
            "-mi",
            ip,
            "-mp",
            str(media_port if media_port is not None else next(_media_ports)),
            "-timeout",
            f"{lifetime}s",
        ]
        for k, v in sets.items():
            args += ["-set", k, v]
        s = self._run(name, args, trace=trace)
        # Asterisk may send at once (a qualify, a call): wait until SIPp has bound its port.
        wait_until(lambda: _udp_bound(ip, port) or s.proc.poll() is not None, 10, f"{name} bound")
        assert s.proc.poll() is None, f"SIPp {name} exited at start:\n{s.log()}"
        return s

    def patient(
        self,
        number: str,
        ip: str = "127.0.0.1",
        scenario: str = "patient.xml",
        to: str = "127.0.0.1:5060",
        **sets: str,
    ) -> Sipp:
        """A patient (SIPp UAC) calling ``number`` through Asterisk as endpoint 'patient'
        (from ``AGI_PATIENT_IP``: as 'patient-agi', whose calls enter over FastAGI), or
        through whatever listens at ``to`` (Kamailio in nodes.py)."""
        port = 5070 + len(self.procs)
        args = [
            to,
            "-sf",
            str(SIPP_DIR / scenario),
            "-s",
            number,
            "-i",
            ip,
            "-p",
            str(port),
            "-mi",
            ip,
            "-mp",
            str(next(_media_ports)),
            "-m",
            "1",
            "-timeout",
            "90s",
            "-timeout_error",
        ]
        for k, v in sets.items():
            args += ["-set", k, v]
        return self._run("patient", args)

    def close(self) -> None:
        for p in self.procs:
            p.stop()
