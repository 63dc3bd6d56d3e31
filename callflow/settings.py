"""Daemon settings: a TOML file, every key overridable by an environment variable.

``CALLFLOW_<SECTION>_<KEY>`` overrides ``[section] key`` (``CALLFLOW_ARI_URL``,
``CALLFLOW_FLOWS_DIR`` ...).  Secrets never sit in the file: the file names an environment
variable (``password_env``) or a file (``password_file``) that holds them.  Unknown keys are
refused by name so that a typo never silently falls back to a default.

The file is found the usual way (``find_config``): ``--config``, else ``$CALLFLOW_CONFIG``,
else ``/etc/callflow/callflow.toml``, else ``./callflow.toml`` (a checkout, for development).
Relative paths of configuration (flows, token and key files) are relative to the file;
relative paths of data (the SQLite database, the spool) are relative to ``[daemon]
state_dir`` (``/var/lib/callflow`` unless said otherwise), so that nothing is written
beside the settings in ``/etc/callflow``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import SettingsError

ENV_PREFIX = "CALLFLOW_"
CONFIG_ENV = "CALLFLOW_CONFIG"  # the settings file, when --config is not given
SYSTEM_CONFIG = Path("/etc/callflow/callflow.toml")
DEV_CONFIG = Path("callflow.toml")  # a checkout's, in the current directory
STATE_DIR = "/var/lib/callflow"  # a system install's data (systemd's StateDirectory=callflow)
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LANGUAGES = ("fr", "en")  # what staff read is French by default, English available
EVENT_LOOPS = ("uvloop", "asyncio")  # callflow/eventloop.py's LoopKind


@dataclass(frozen=True)
class AriSettings:
    url: str = "http://127.0.0.1:8088"
    app: str = "callflow"
    username: str = "callflow"
    password_env: str = "CALLFLOW_ARI_PASSWORD"
    password_file: str | None = None
    request_timeout: float = 10.0
    pool_size: int = 20
    transport: str = "auto"  # auto | websocket | http: how REST requests reach Asterisk
    rest_lanes: int = 1  # more websockets carrying REST beside the events socket
    # Seconds between pings on the events websocket and the lanes: an Asterisk that died
    # without closing them (power cut, network lost) is noticed within about 1.5x this.
    heartbeat: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.heartbeat <= 300:
            # Under 1 s, a daemon stalled that long (or an Asterisk slow to read its socket)
            # would give up a live connection.
            raise SettingsError(
                f"[ari] heartbeat must be between 1 and 300 seconds, got {self.heartbeat}"
            )
        if self.transport not in ("auto", "websocket", "http"):
            raise SettingsError(
                f"[ari] transport must be 'auto', 'websocket' or 'http', got {self.transport!r}"
            )
        if not 0 <= self.rest_lanes <= 16:
            raise SettingsError(f"[ari] rest_lanes must be between 0 and 16, got {self.rest_lanes}")
        lanes = self.rest_lanes if self.transport != "http" else 0
        if lanes and self.pool_size < self.rest_lanes + 3:
            raise SettingsError(
                f"[ari] pool_size ({self.pool_size}) must be at least rest_lanes + 3 "
                f"({self.rest_lanes + 3}): each lane holds one of its connections "
                "(or set rest_lanes = 0)"
            )


@dataclass(frozen=True)
class AmiSettings:
    """The Asterisk Manager Interface: trunk health (contacts' qualify status)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "callflow"
    secret_env: str = "CALLFLOW_AMI_SECRET"
    secret_file: str | None = None
    action_timeout: float = 5.0  # seconds any one AMI action may take


@dataclass(frozen=True)
class FlowsSettings:
    dir: str = "dialplans"
    default: str | None = None  # flow for a dialed number that no flow claims
    sounds_prefix: str = "sound:"  # media URI prefix for a sound name in a flow
    feed_refresh: float = 900.0  # seconds between two reads of the calendars' iCal feeds
    feed_timeout: float = 30.0  # seconds one feed may take to download

    def __post_init__(self) -> None:
        if not 10 <= self.feed_refresh <= 86_400:
            raise SettingsError("[flows] feed_refresh must be between 10 and 86400 seconds")
        if not 0 < self.feed_timeout <= 300:
            raise SettingsError("[flows] feed_timeout must be between 0 and 300 seconds")


@dataclass(frozen=True)
class DaemonSettings:
    log_level: str = "INFO"
    log_format: str = "text"  # text | json
    stop_grace: float = 30.0  # seconds calls may take to finish on SIGTERM
    # The daemon's data: the SQLite call log, the spool, trunks.json, overrides.  Relative
    # to the settings file when relative; the data paths of [database] are relative to it.
    state_dir: str = STATE_DIR
    # Asterisk's config folder on this machine (e.g. /etc/asterisk): the daemon refuses to
    # start while a secret or PIN there is a placeholder or guessable. None: not checked.
    asterisk_conf: str | None = None
    language: str = "fr"  # what staff read: the page, the HTML report, holiday names (fr | en)
    event_loop: str = "uvloop"  # uvloop | asyncio (the standard library's loop)

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise SettingsError(
                f"[daemon] language must be one of {', '.join(LANGUAGES)}, got {self.language!r}"
            )
        if self.event_loop not in EVENT_LOOPS:
            raise SettingsError(
                f"[daemon] event_loop must be one of {', '.join(EVENT_LOOPS)}, "
                f"got {self.event_loop!r}"
            )


@dataclass(frozen=True)
class DatabaseSettings:
    """The call log (``callflow.store``): SQLite by default, PostgreSQL in production."""

    # SQLAlchemy URL, without a password (a relative SQLite path is relative to state_dir).
    url: str = "sqlite+aiosqlite:///callflow.db"
    password_env: str = "CALLFLOW_DATABASE_PASSWORD"  # the password for a url that needs one
    password_file: str | None = None
    # The journal (relative to state_dir): every record, before the database.
    spool_dir: str = "spool"
    batch_size: int = 500  # rows per write transaction
    flush_interval: float = 1.0  # seconds between database writes when traffic is low
    commit_interval: float = 0.05  # seconds a record may wait for the journal (group commit)
    sync_interval: float = 1.0  # seconds between the journal's fsyncs (what a power loss loses)
    write_timeout: float = 10.0  # a write slower than this counts as an outage (spooled)
    memory_limit: int = 100_000  # records held in memory when neither database nor spool work

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.memory_limit < 1:
            raise SettingsError("[database] batch_size and memory_limit must be at least 1")
        intervals = (self.flush_interval, self.commit_interval, self.sync_interval)
        if min(*intervals, self.write_timeout) <= 0:
            raise SettingsError(
                "[database] flush_interval, commit_interval, sync_interval and write_timeout "
                "must be positive"
            )


@dataclass(frozen=True)
class CdrSettings:
    """Asterisk's own call records (``asterisk-conf/callflow/cdr_custom_callflow.conf``): the
    calls the daemon never saw are imported from them, calls a crash left open are closed
    with them, and the calls it shed get what the fallback did with them."""

    file: str = ""  # the cdr_custom JSON file; empty: no import (open calls close as lost)
    poll_interval: float = 2.0  # seconds between two reads of the file
    settle: float = 5.0  # seconds a vanished call's CDR may take to appear before "lost"

    def __post_init__(self) -> None:
        if self.poll_interval <= 0 or self.settle < 0:
            raise SettingsError("[cdr] poll_interval must be positive and settle not negative")


@dataclass(frozen=True)
class PrivacySettings:
    """What is kept about callers, and for how long (GDPR)."""

    caller_numbers: str = "clear"  # clear | pseudonymised (keyed HMAC-SHA256)
    key_file: str | None = None  # the HMAC key, required when pseudonymised
    old_key_files: tuple[str, ...] = ()  # earlier keys: their pseudonyms are still found
    retention_days: int = 365  # calls and steps older than this are deleted
    callback_erase_days: int = 30  # a callback's number is erased this long after it is done

    def __post_init__(self) -> None:
        if self.caller_numbers not in ("clear", "pseudonymised"):
            raise SettingsError(
                "[privacy] caller_numbers must be 'clear' or 'pseudonymised', "
                f"got {self.caller_numbers!r}"
            )
        if self.retention_days < 1:
            raise SettingsError("[privacy] retention_days must be at least 1")
        if not 0 <= self.callback_erase_days <= self.retention_days:
            raise SettingsError("[privacy] callback_erase_days must be 0 to retention_days")


@dataclass(frozen=True)
class HttpSettings:
    """The admin HTTP API, ``/metrics``, ``/healthz`` and the practice's page (``callflow.api``).

    Who may use ``/api/``: the staff accounts of ``accounts_file`` (``callflow account add``;
    each logs in with a TOTP second factor) and the service tokens of ``token_file`` (lines
    ``name:token`` or ``name:role:token``); with neither, every ``/api/`` route is refused.
    Both are re-read on SIGHUP.  A ``listen`` address other than loopback serves HTTPS
    (``tls_cert``, ``tls_key``), or needs ``behind_proxy = true`` (a TLS proxy in front;
    the client's address is then the right-most ``X-Forwarded-For`` entry, the proxy's).
    """

    enabled: bool = True
    listen: str = "127.0.0.1:8089"  # host:port; loopback only unless you mean otherwise
    accounts_file: str | None = None
    token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    behind_proxy: bool = False

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise SettingsError(
                f"[http] listen must be host:port (e.g. 127.0.0.1:8089), got {self.listen!r}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("[http] tls_cert and tls_key go together")
        if not self.loopback and self.tls_cert is None and not self.behind_proxy:
            raise SettingsError(
                f"[http] listen {self.listen} is reachable from the network: set tls_cert and "
                "tls_key (HTTPS), or behind_proxy = true if a TLS proxy fronts it"
            )

    @property
    def loopback(self) -> bool:
        host = self.host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a name: it may resolve to anything

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _listen(section: str, listen: str, example: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(
            f"[{section}] listen must be host:port (e.g. {example}), got {listen!r}"
        )
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class AgiSettings:
    """The FastAGI listener (``callflow.agi``), for dialplans entering flows with
    ``AGI(agi://host:port/FLOW)``.  Off unless ``enabled``; only ``allow``ed addresses
    (Asterisk's) may connect."""

    enabled: bool = False
    listen: str = "127.0.0.1:4573"  # host:port
    allow: str = "127.0.0.1, ::1"  # addresses or networks, comma-separated
    request_timeout: float = 5.0  # seconds for Asterisk's request headers
    command_timeout: float = 10.0  # seconds for a command other than a prompt, wait or dial

    def __post_init__(self) -> None:
        _listen("agi", self.listen, "127.0.0.1:4573")
        if self.request_timeout <= 0 or self.command_timeout <= 0:
            raise SettingsError("[agi] request_timeout and command_timeout must be positive")
        if not self.networks:
            raise SettingsError("[agi] allow names no address: every connection would be refused")

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``allow`` as networks (an address is a network of one)."""
        nets = []
        for part in (p.strip() for p in self.allow.split(",")):
            if part:
                try:
                    nets.append(ipaddress.ip_network(part, strict=False))
                except ValueError:
                    raise SettingsError(
                        f"[agi] allow: not an address or network: {part!r}"
                    ) from None
        return tuple(nets)

    @property
    def host(self) -> str:
        return _listen("agi", self.listen, "")[0]

    @property
    def port(self) -> int:
        return _listen("agi", self.listen, "")[1]


@dataclass(frozen=True)
class OverloadSettings:
    """Overload shedding: when the daemon is behind, new calls go straight to the dialplan
    fallback (a caller never waits in silence for the daemon).  Shedding starts when one
    budget is exceeded and stops when every signal is under ``resume_ratio`` of its budget
    and it has lasted ``hold`` seconds.  A flow with ``never_shed: true`` is never shed."""

    enabled: bool = True
    max_in_flight: int = 400  # ARI requests awaiting Asterisk's answer
    max_answer_latency: float = 1.0  # seconds from arrival in Stasis to answered
    max_loop_lag: float = 0.25  # seconds the event loop wakes up late
    resume_ratio: float = 0.5
    hold: float = 5.0  # seconds
    latency_window: float = 10.0  # seconds an answer latency counts for
    lag_interval: float = 0.1  # seconds between two event-loop lag measurements
    in_flight_for: float = 0.5  # seconds in flight must stay over its budget to shed

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise SettingsError("[overload] max_in_flight must be at least 1")
        if min(self.max_answer_latency, self.max_loop_lag, self.latency_window) <= 0:
            raise SettingsError(
                "[overload] max_answer_latency, max_loop_lag and latency_window must be positive"
            )
        if not 0 < self.resume_ratio <= 1:
            raise SettingsError("[overload] resume_ratio must be > 0 and <= 1")
        if self.hold < 0 or self.lag_interval <= 0:
            raise SettingsError("[overload] hold must be >= 0 and lag_interval positive")
        if self.in_flight_for < 0:
            raise SettingsError("[overload] in_flight_for must be >= 0")


@dataclass(frozen=True)
class NodeSettings:
    """This daemon's node: one daemon per Asterisk node, several nodes on one database."""

    # Tags every call and trunk change this daemon logs, and limits the after-crash pass to
    # its own calls.  Empty: the host name.  Unique per node, stable across restarts.
    name: str = ""

    def __post_init__(self) -> None:
        if self.name and not NODE_NAME.match(self.name):
            raise SettingsError(
                f"[node] name must be 1-64 letters, digits, '.', '_' or '-', got {self.name!r}"
            )

    @property
    def resolved(self) -> str:
        """The node's name: ``name``, else this host's name (cut to 64 characters)."""
        if self.name:
            return self.name
        host = socket.gethostname().split(".")[0] or "localhost"
        return host[:64]


@dataclass(frozen=True)
class DrillsSettings:
    """Forwarding drills: real test calls to each forwarding destination, trunk by trunk
    (``callflow drill``, the page, and by themselves ``lead`` seconds before each closure,
    holiday and weekend).  ``caller_id`` is the number the test call shows (empty: the
    trunk's own); ``max_age_days``: ``check --horizon`` reports a destination whose last
    successful drill is older."""

    scheduled: bool = True
    lead: float = 3600.0  # seconds before the closing: the last open hour
    caller_id: str = ""
    max_age_days: int = 90

    def __post_init__(self) -> None:
        if not 60 <= self.lead <= 24 * 3600:
            raise SettingsError("[drills] lead must be 60 to 86400 seconds")
        if self.caller_id and not self.caller_id.lstrip("+").isdigit():
            raise SettingsError("[drills] caller_id must be a phone number (digits, optional +)")
        if self.max_age_days < 1:
            raise SettingsError("[drills] max_age_days must be at least 1")


@dataclass(frozen=True)
class Settings:
    node: NodeSettings = field(default_factory=NodeSettings)
    ari: AriSettings = field(default_factory=AriSettings)
    ami: AmiSettings = field(default_factory=AmiSettings)
    flows: FlowsSettings = field(default_factory=FlowsSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    cdr: CdrSettings = field(default_factory=CdrSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    agi: AgiSettings = field(default_factory=AgiSettings)
    overload: OverloadSettings = field(default_factory=OverloadSettings)
    drills: DrillsSettings = field(default_factory=DrillsSettings)
    base_dir: Path = Path(".")  # relative paths in the file are relative to the file
    source: Path | None = None  # the settings file (None: defaults and environment only)

    def resolve(self, path: str) -> Path:
        """A configuration path (flows, token or key file): relative to the settings file."""
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.daemon.state_dir)

    def state_path(self, path: str) -> Path:
        """A data path (database, spool, snapshots): relative to the state directory."""
        p = Path(path)
        return p if p.is_absolute() else self.state_dir / p

    @property
    def origin(self) -> str:
        """Where these settings came from, for messages."""
        return str(self.source) if self.source else "defaults (no settings file)"


_SECTIONS: dict[str, type[Any]] = {
    "node": NodeSettings,
    "ari": AriSettings,
    "ami": AmiSettings,
    "flows": FlowsSettings,
    "daemon": DaemonSettings,
    "database": DatabaseSettings,
    "privacy": PrivacySettings,
    "cdr": CdrSettings,
    "http": HttpSettings,
    "agi": AgiSettings,
    "overload": OverloadSettings,
    "drills": DrillsSettings,
}


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _convert(section: str, key: str, value: Any, target: Any, source: str) -> Any:
    where = f"{source}: [{section}] {key}"
    types = str(target)
    if types.startswith("tuple[str"):  # a list of texts; comma-separated in the environment
        if isinstance(value, str) and source.startswith("environment"):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise SettingsError(f"{where}: expected a list of texts, got {value!r}")
    if isinstance(value, str) and source.startswith("environment"):
        # Environment values are strings: convert them to the declared type.
        if types == "bool":
            word = value.strip().lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise SettingsError(f"{where}: expected true or false, got {value!r}")
        if "float" in types:
            try:
                return float(value)
            except ValueError:
                raise SettingsError(f"{where}: expected a number, got {value!r}") from None
        if "int" in types:
            try:
                return int(value)
            except ValueError:
                raise SettingsError(f"{where}: expected an integer, got {value!r}") from None
        return value
    if value is None and "None" in types:
        return None
    if types == "bool":
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{where}: expected true or false, got {value!r}")
    if "float" in types and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if "int" in types and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "str" in types and isinstance(value, str):
        return value
    raise SettingsError(f"{where}: expected {types.replace(' | None', '')}, got {value!r}")


def load_settings(path: Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (or only defaults when None) and apply ``CALLFLOW_*`` overrides."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    base = Path(".")
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: invalid TOML: {exc}") from None
        base = path.parent
    for section in raw:
        if section not in _SECTIONS:
            known = ", ".join(_SECTIONS)
            raise SettingsError(f"{source}: unknown section [{section}] (known: {known})")
    built: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise SettingsError(f"{source}: [{section}] must be a table")
        names = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in names:
                raise SettingsError(
                    f"{source}: unknown key '{key}' in [{section}] (known: {', '.join(names)})"
                )
            kwargs[key] = _convert(section, key, value, names[key].type, source)
        for key, f in names.items():
            var = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            if var in env:
                kwargs[key] = _convert(section, key, env[var], f.type, f"environment {var}")
        built[section] = cls(**kwargs)
    # A CALLFLOW_* variable that matches no setting is a typo, unless it holds a secret.
    secret_vars = {
        getattr(sec, f.name)
        for sec in built.values()
        for f in fields(sec)
        if f.name.endswith("_env")
    }
    for var in env:
        if not var.startswith(ENV_PREFIX) or var in secret_vars:
            continue
        section, _, key = var[len(ENV_PREFIX) :].lower().partition("_")
        if section in _SECTIONS and key not in {f.name for f in fields(_SECTIONS[section])}:
            raise SettingsError(f"environment {var}: no setting '{key}' in [{section}]")
    return Settings(base_dir=base, source=path, **built)


def config_candidates(
    explicit: Path | None, env: Mapping[str, str] | None = None
) -> list[tuple[str, Path]]:
    """Where the settings file is looked for, in order, each with why."""
    env = os.environ if env is None else env
    if explicit is not None:
        return [("--config", explicit)]
    if env.get(CONFIG_ENV):
        return [(f"${CONFIG_ENV}", Path(env[CONFIG_ENV]))]
    return [("system", SYSTEM_CONFIG), ("current directory", DEV_CONFIG)]


def find_config(
    explicit: Path | None,
    env: Mapping[str, str] | None = None,
    *,
    candidates: list[tuple[str, Path]] | None = None,
) -> Path | None:
    """The settings file: ``--config``, else ``$CALLFLOW_CONFIG``, else the system's, else
    ``./callflow.toml``; None when there is none.  A file named by ``--config`` or
    ``$CALLFLOW_CONFIG`` must exist (a typo never falls back to another file)."""
    found = config_candidates(explicit, env) if candidates is None else candidates
    for why, path in found:
        if path.is_file():
            return path
        if why in ("--config", f"${CONFIG_ENV}"):
            raise SettingsError(f"{path} (from {why}): no such settings file")
    return None


def discover_settings(
    explicit: Path | None, env: Mapping[str, str] | None = None, *, required: bool = False
) -> Settings:
    """``load_settings`` of the file ``find_config`` finds; defaults when there is none,
    unless ``required`` (the daemon needs a file)."""
    path = find_config(explicit, env)
    if path is None and required:
        looked = ", ".join(str(p) for _, p in config_candidates(explicit, env))
        raise SettingsError(
            f"no settings file: looked for {looked}; give --config FILE or set {CONFIG_ENV}"
        )
    return load_settings(path, env)


def read_secret(
    env_var: str | None,
    file: str | None,
    what: str,
    base: Path,
    env: Mapping[str, str] | None = None,
) -> str:
    """A secret from a file (preferred when given) or an environment variable."""
    env = os.environ if env is None else env
    if file:
        p = Path(file)
        p = p if p.is_absolute() else base / p
        try:
            value = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{what}: cannot read secret file {p}: {exc.strerror}") from None
        if not value:
            raise SettingsError(f"{what}: secret file {p} is empty")
        return value
    if env_var and env.get(env_var):
        return env[env_var]
    raise SettingsError(
        f"{what}: no secret: set the environment variable {env_var} or a *_file setting"
    )
