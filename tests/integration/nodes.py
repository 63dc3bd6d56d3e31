"""The cluster bench: two Asterisk nodes from the one sandbox chroot, Kamailio in front.

Each node is a second (and third) Asterisk started from the sandbox's chroot with its own
configuration folder ``/etc/asterisk-<node>`` (``asterisk -C``): the bench's configuration
(``asterisk-conf/`` + ``tests/integration/asterisk/``, as ``asterisk-sandbox configure
--test``) with its own addresses, its own run, log, spool and astdb folders, its own RTP
ports and ``systemname`` (so that its channel ids, the call log's call ids, cannot collide
with the other node's in the shared database). Nothing of the sandbox's own Asterisk is
touched: it may run beside them on 127.0.0.1.

Address plan (beside tests/integration/README.md's):

    who         SIP                ARI / AMI                     RTP
    Kamailio    127.0.0.20:5060    kamcmd on a unix socket       -
    node1       127.0.0.21:5060    127.0.0.21:8088 / :5038       12000-12999
    node2       127.0.0.22:5060    127.0.0.22:8088 / :5038       13000-13999

Each node identifies Kamailio's address as the endpoint ``kamailio`` (context
``from-trunk``): every patient reaches a node through Kamailio. Phones and trunks keep their
addresses of the plan and are rung by the nodes directly (static contacts on both nodes); a
phone's own call through Kamailio is identified by the ``X-Callflow-Source`` header Kamailio
adds (``match_header``, tried before the source address).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import ARI_PASSWORD, ARI_USER, PEERS, REPO, SANDBOX_ROOT, wait_until

KAMAILIO_IP = "127.0.0.20"
KAMAILIO_CFG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
# The bench's probe interval (seconds) and node timeout (ms): production uses 5 s / 2000 ms.
PING_INTERVAL = 2
NODE_TIMEOUT_MS = 1500

NODE_ADDRESSES = {"node1": ("127.0.0.21", 12000), "node2": ("127.0.0.22", 13000)}
PHONES = ("accueil", "dr-a", "dr-b", "dr-c")


def _modules_dir() -> str:
    for d in sorted((SANDBOX_ROOT / "usr" / "lib").glob("*/asterisk/modules")):
        return "/" + str(d.relative_to(SANDBOX_ROOT))
    raise AssertionError(f"no Asterisk modules folder in {SANDBOX_ROOT}/usr/lib")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class AsteriskNode:
    """One Asterisk of the cluster, in the sandbox's chroot with its own folders."""

    name: str
    ip: str
    rtp_start: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"asterisk-{self.name}.log"
        self.etc = f"/etc/asterisk-{self.name}"  # inside the chroot
        self.dirs = {
            "astrundir": f"/run/asterisk-{self.name}",
            "astlogdir": f"/var/log/asterisk-{self.name}",
            "astdbdir": f"/var/lib/asterisk-{self.name}",
            "astspooldir": f"/var/spool/asterisk-{self.name}",
        }

    @property
    def ari_url(self) -> str:
        return f"http://{self.ip}:8088"

    @property
    def cdr_file(self) -> Path:
        """The CDRs this node writes (cdr_custom under its own log folder), from the host."""
        return SANDBOX_ROOT / self.dirs["astlogdir"].lstrip("/") / "cdr-custom/callflow-cdr.json"

    def configure(self) -> None:
        """Write ``/etc/asterisk-<node>`` in the chroot (afresh) and empty its folders."""
        etc = SANDBOX_ROOT / self.etc.lstrip("/")
        shutil.rmtree(etc, ignore_errors=True)
        etc.mkdir(parents=True)
        for src in (REPO / "asterisk-conf", REPO / "tests/integration/asterisk"):
            for f in src.glob("*.conf"):
                shutil.copy(f, etc / f.name)
        self._edit(etc / "asterisk.conf", self._asterisk_conf)
        self._edit(etc / "pjsip.conf", self._pjsip_conf)
        self._edit(etc / "http.conf", lambda t: _setting(t, "bindaddr", self.ip))
        self._edit(etc / "manager.conf", self._manager_conf)
        self._edit(etc / "rtp.conf", self._rtp_conf)
        for d in self.dirs.values():
            path = SANDBOX_ROOT / d.lstrip("/")
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        # cdr_custom writes into this folder but does not make it (Debian's package does).
        self.cdr_file.parent.mkdir(parents=True)

    @staticmethod
    def _edit(path: Path, change: Any) -> None:
        path.write_text(change(path.read_text()))

    def _asterisk_conf(self, text: str) -> str:
        # Drop the shipped [directories] (a template there, "(!)") for this node's own.
        text = re.sub(r"(?ms)^\[directories\][^\n]*\n.*?(?=^\[)", "", text)
        dirs = {
            "astcachedir": "/var/cache/asterisk",
            "astetcdir": self.etc,
            "astmoddir": _modules_dir(),
            "astvarlibdir": "/var/lib/asterisk",
            "astkeydir": "/var/lib/asterisk",
            "astdatadir": "/usr/share/asterisk",
            "astagidir": "/usr/share/asterisk/agi-bin",
            "astsbindir": "/usr/sbin",
            **self.dirs,
        }
        head = "[directories]\n" + "".join(f"{k} => {v}\n" for k, v in dirs.items()) + "\n"
        # systemname prefixes every channel's unique id: the call ids of two nodes differ.
        text = re.sub(r"(?m)^\[options\][^\n]*\n", f"[options]\nsystemname = {self.name}\n", text)
        return head + text

    def _pjsip_conf(self, text: str) -> str:
        text = text.replace("bind = 127.0.0.1:5060", f"bind = {self.ip}:5060")
        assert f"bind = {self.ip}:5060" in text, "the bench's pjsip.conf transport changed"
        # A phone's call through Kamailio comes from Kamailio's address: the phone is known
        # by X-Callflow-Source (its own address, which Kamailio adds), tried first.
        text = _setting(text, "endpoint_identifier_order", "header,ip,username")
        for phone in PHONES:
            ip = PEERS[phone][0]
            ident = f"[{phone}]\ntype = identify\nendpoint = {phone}\nmatch = {ip}\n"
            assert ident in text, f"the bench's identify of {phone} changed"
            text = text.replace(ident, ident + f"match_header = X-Callflow-Source: {ip}\n")
            endpoint = f"[{phone}](bench-endpoint)\n"
            assert endpoint in text, f"the bench's endpoint {phone} changed"
            text = text.replace(endpoint, endpoint + "identify_by = header,ip\n")
        return text + (
            "\n; ---- cluster bench: Kamailio in front (tests/integration/nodes.py)\n"
            "[kamailio](bench-endpoint)\ncontext = from-trunk\n\n"
            f"[kamailio]\ntype = identify\nendpoint = kamailio\nmatch = {KAMAILIO_IP}\n"
        )

    def _manager_conf(self, text: str) -> str:
        text = _setting(text, "bindaddr", self.ip)
        # The daemon connects from any loopback address to the node's own.
        return text.replace("permit = 127.0.0.1/255.255.255.255", "permit = 127.0.0.0/255.0.0.0")

    def _rtp_conf(self, text: str) -> str:
        text = _setting(text, "rtpstart", str(self.rtp_start))
        return _setting(text, "rtpend", str(self.rtp_start + 999))

    def start(self, timeout: float = 90) -> None:
        conf = f"{self.etc}/asterisk.conf"
        log = self.log_path.open("ab")
        # Its own session (like the sandbox's): a SIGKILL of it is what a crash is.
        self.proc = subprocess.Popen(
            ["chroot", str(SANDBOX_ROOT), "/usr/sbin/asterisk", "-f", "-n", "-C", conf],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(self.ari_up, timeout, f"{self.name}'s ARI on {self.ari_url}\n{self.log()}")
        self.cli("core waitfullybooted")

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-3000:]

    def ari(self, method: str, path: str) -> Any:
        req = urllib.request.Request(f"{self.ari_url}/ari{path}", method=method)
        token = b64encode(f"{ARI_USER}:{ARI_PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def ari_up(self) -> bool:
        try:
            self.ari("GET", "/asterisk/info")
            return True
        except OSError:
            return False

    def channels(self) -> list[dict[str, Any]]:
        return list(self.ari("GET", "/channels") or [])

    def cli(self, command: str) -> str:
        conf = f"{self.etc}/asterisk.conf"
        out = subprocess.run(
            ["chroot", str(SANDBOX_ROOT), "/usr/sbin/asterisk", "-C", conf, "-rx", command],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout

    def crash(self) -> None:
        """SIGKILL this node's Asterisk (the process this bench started) and wait for it."""
        assert self.proc is not None
        pid = self.proc.pid
        os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        wait_until(lambda: not _alive(pid), 10, f"{self.name}'s Asterisk (pid {pid}) to die")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.cli("core stop now")
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _setting(text: str, key: str, value: str) -> str:
    """``key = value`` for every ``key =`` line of an Asterisk .conf file (asserts one)."""
    new, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text)
    assert n >= 1, f"no {key} = line to change"
    return new


@dataclass
class Kamailio:
    """Debian's Kamailio with deploy/kamailio/kamailio.cfg, dispatching to ``nodes``."""

    workdir: Path
    nodes: list[AsteriskNode]
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.dir = self.workdir / "kamailio"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "kamailio.log"
        self.ctl = f"unixs:{self.dir / 'ctl'}"

    @property
    def address(self) -> str:
        return f"{KAMAILIO_IP}:5060"

    def start(self) -> None:
        exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
        assert Path(exe).exists(), "kamailio is not installed (apt-get install kamailio)"
        ds = self.dir / "dispatcher.list"
        ds.write_text("".join(f"1 sip:{n.ip}:5060 8 0 duid={n.name}\n" for n in self.nodes))
        defines = {
            "LISTEN": f"udp:{self.address}",
            "DISPATCHER_LIST": f'"{ds}"',
            "CTL_SOCKET": f'"{self.ctl}"',
            "PING_INTERVAL": str(PING_INTERVAL),
            "NODE_TIMEOUT": str(NODE_TIMEOUT_MS),
        }
        args = [exe, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-Y", str(self.dir), "-w", str(self.dir)]
        args += ["-P", str(self.dir / "kamailio.pid")]
        for k, v in defines.items():
            args += ["-A", f"{k}={v}"]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        wait_until(
            lambda: self.states() is not None, 20, f"Kamailio's control socket\n{self.log()}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def states(self) -> dict[str, str] | None:
        """Each node's dispatcher flags (``AP``: active, probing; ``IP``: inactive), by
        node address; None while Kamailio does not answer."""
        out = subprocess.run(
            ["kamcmd", "-s", self.ctl, "dispatcher.list"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode != 0:
            return None
        found = re.findall(r"URI: sip:([\d.]+):\d+\s+FLAGS: (\w+)", out.stdout)
        return {ip: flags for ip, flags in found}

    def up(self, node: AsteriskNode) -> bool:
        return (self.states() or {}).get(node.ip, "").startswith("A")

    def dispatched(self) -> dict[str, str]:
        """Where Kamailio sent each call last (Call-ID -> node address), from its log."""
        out: dict[str, str] = {}
        for ci, ip in re.findall(r"dispatch: INVITE (\S+) to sip:([\d.]+):", self.log()):
            out[ci] = ip
        return out

    def marked_down(self) -> list[float]:
        """When Kamailio marked a node down (Unix times), from its log."""
        return [float(t) for t in re.findall(r"node down: .* at (\d+\.\d+)", self.log())]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
