"""The composition root: builds every part of the daemon, wires them, declares their
lifetime once (``Daemon.parts``), owns signals.

Nothing else in callflow reads settings, secrets, the clock or signals; each part gets what
it needs from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .agi import AgiConfig, AgiServer
from .ami.manager import AmiClient, AmiConfig
from .ami.qualify import AmiTrunkMonitor
from .api import (
    Account,
    AdminContext,
    AdminServer,
    Credentials,
    calendar_states,
    create_app,
    load_accounts,
    load_tokens,
)
from .api.server import tls_context
from .ari.channels import ChannelRegistry
from .ari.client import EVENT_CONNECTED, EVENT_DISCONNECTED, AriClient, AriConfig
from .ari.overload import Budgets, Shedder
from .ari.service import CallService
from .ari.testcall import AriTestCaller
from .ari.websocket import TRANSPORTS, TransportMode
from .drills import DrillRunner
from .drills.scheduler import Drills
from .errors import SettingsError
from .feeds import FeedFetcher
from .flow.engine import Engine
from .flow.events import FanOut
from .flow.live import LiveFlows, ReloadResult
from .flow.registry import FlowSet
from .flow.services import Services
from .lifetime import Lifetime, Part
from .looplag import LoopLag
from .metrics import Metrics, Probes
from .metrics.drill_gauges import DrillGauges
from .overrides import COPY_FILE as OVERRIDES_COPY
from .overrides import OVERRIDES_FILE, SharedOverrides
from .pbxconf import refuse_placeholder, refuse_placeholders_in
from .schedule import FeedBook
from .sdnotify import Notifier
from .settings import Settings, read_secret
from .store.aftercrash import ALIVE_FILE, AfterCrash
from .store.cdr import CdrFile
from .store.drill_log import SqlDrillLog
from .store.store import Store
from .tasks import Tasks
from .trunks import SNAPSHOT_FILE, HealthAwareSelector, TrunkHealth, TrunkState

log = logging.getLogger("callflow")


class _Formatter(logging.Formatter):
    """The stock formatter, but the date and time of a line are formatted once per second:
    ``time.localtime`` (which checks the time zone file each time) and ``strftime`` were a
    third of a line's cost, on the event loop, for a few lines per call.  Same output."""

    _stamp: tuple[int, str | None, str] = (-1, None, "")  # second, datefmt, its text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached, cached_fmt, stamp = self._stamp  # one tuple: a thread's line sees one state
        if second != cached or datefmt != cached_fmt:
            stamp = time.strftime(datefmt or self.default_time_format, self.converter(second))
            self._stamp = (second, datefmt, stamp)
        msec = self.default_msec_format
        if datefmt or not msec:
            return stamp
        return msec % (stamp, record.msecs)


class _JsonFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.daemon.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    # Neither format shows a thread, a process or where in the code a line was logged:
    # not computing them takes about a quarter off each line (several per call, on the
    # event loop), as the logging HOWTO's "Optimization" section advises.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.daemon.log_level.upper())
    # aiohttp's access-level chatter is not ours to show at INFO.
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    # aiosqlite's DEBUG lines carry every SQL parameter: callers' numbers, never logged.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


class Daemon:
    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.node = settings.node.resolved  # tags this daemon's calls and trunk changes
        ari = settings.ari
        password = read_secret(
            ari.password_env, ari.password_file, "[ari] password", settings.base_dir, env
        )
        refuse_placeholder(password, "[ari] password")
        if settings.daemon.asterisk_conf:
            refuse_placeholders_in(settings.resolve(settings.daemon.asterisk_conf))
        # The calendars' iCal feeds: read by every flow version, filled by the fetcher.
        self.feed_book = FeedBook()
        self.flows = LiveFlows(
            settings.resolve(settings.flows.dir),
            settings.flows.default,
            self.feed_book,
            language=settings.daemon.language,
        )
        self.feeds = FeedFetcher(
            self.feed_book,
            lambda: self.flows.current.feed_locations(),
            settings.state_dir / "feeds",
            interval=settings.flows.feed_refresh,
            timeout=settings.flows.feed_timeout,
        )
        self.ari_config = AriConfig(
            url=ari.url,
            app=ari.app,
            username=ari.username,
            password=password,
            request_timeout=ari.request_timeout,
            pool_size=ari.pool_size,
            transport=transport_mode(ari.transport),
            rest_lanes=ari.rest_lanes,
            heartbeat=ari.heartbeat,
        )
        # Trunk health: qualify states over AMI plus a circuit breaker fed by real calls.
        self.health = TrunkHealth(route_trunks(self.flows.current))
        self.selector = HealthAwareSelector(self.health)
        self.trunk_snapshot = settings.state_dir / SNAPSHOT_FILE
        self.selector.subscribe(self._write_trunk_snapshot)
        self.ami: AmiClient | None = None
        self.monitor: AmiTrunkMonitor | None = None
        if settings.ami.enabled:
            ami = settings.ami
            secret = read_secret(
                ami.secret_env, ami.secret_file, "[ami] secret", settings.base_dir, env
            )
            refuse_placeholder(secret, "[ami] secret")
            self.ami = AmiClient(AmiConfig.from_settings(ami, secret))
            self.monitor = AmiTrunkMonitor(self.ami, self.health)
        else:
            log.warning("AMI disabled: trunk health comes from call results only")
        # The call log: the engine's observer and callback sink; never blocks a call.
        self.store = Store.from_settings(settings, env)
        recorder = self.store.recorder
        self.health.subscribe(
            lambda c: (
                recorder.trunk_changed(c.trunk, str(c.new), c.rtt_ms) if c.old != c.new else None
            )
        )
        # Calendar overrides set at run time (admin API): in the database, shared by every
        # node on it (PostgreSQL LISTEN/NOTIFY), kept across restarts.
        self.overrides = SharedOverrides(
            self.store.engine,
            node=self.node,
            clock=lambda: datetime.now(UTC),
            legacy_file=settings.state_dir / OVERRIDES_FILE,
            copy_file=settings.state_dir / OVERRIDES_COPY,
        )
        self.metrics = Metrics(self._probes())
        self.services = Services(
            overrides=self.overrides,
            trunks=self.selector,
            callbacks=recorder,
            observer=FanOut(recorder, self.metrics),
            voicemail_problem=self._voicemail_problem,
        )
        self.engine = Engine(self.services)
        self.admin: AdminServer | None = None
        # Read at scrape time by metrics and /healthz; connected once the events flow.
        self.ari_client = AriClient(self.ari_config)
        # Forwarding drills: test calls over ARI (their channels' events come through the
        # call service's registry), on demand and before each closure, holiday, weekend.
        self.registry = ChannelRegistry()
        drills = settings.drills
        self.drills = Drills(
            DrillRunner(
                AriTestCaller(self.ari_client, self.registry),
                self._trunk_check,
                lambda: datetime.now(UTC),
                caller_id=drills.caller_id or None,
            ),
            lambda: self.flows.current.flows,
            SqlDrillLog(self.store.engine, self.node),  # this node's trunks, its results
            lambda: datetime.now(UTC),
            scheduled=drills.scheduled,
            lead=timedelta(seconds=drills.lead),
            ready=self._ari_connected,
        )
        DrillGauges(self.drills.readings, lambda: self.drills.next_drill).register(
            self.metrics.registry
        )
        # Who may use the admin API (none: it refuses every /api/ request, and says so).
        self.credentials = Credentials(self._read_credentials())
        if settings.http.enabled:
            ctx = AdminContext(
                flows=self.flows,
                overrides=self.overrides,
                reload=self.reload,
                trunks=self.selector,
                db=self.store.engine,
                metrics=self.metrics,
                credentials=self.credentials,
                audit=recorder.audit,
                ari_connected=self._ari_connected,
                checks=self._checks(),
                language=settings.daemon.language,
                node=self.node,
                drills=self.drills,
                behind_proxy=settings.http.behind_proxy,
            )
            http = settings.http
            tls = None
            if http.tls_cert is not None and http.tls_key is not None:
                tls = tls_context(settings.resolve(http.tls_cert), settings.resolve(http.tls_key))
            self.admin = AdminServer(create_app(ctx), http.host, http.port, tls=tls)
        # Overload: the loop's lag and the client's requests in flight decide, when a call
        # arrives, whether it is run or shed to the dialplan fallback.
        ov = settings.overload
        self.looplag = LoopLag(ov.lag_interval)
        self.shedder: Shedder | None = None
        if ov.enabled:
            budgets = Budgets(
                max_in_flight=ov.max_in_flight,
                max_answer_latency=ov.max_answer_latency,
                max_loop_lag=ov.max_loop_lag,
                resume_ratio=ov.resume_ratio,
                hold=ov.hold,
                latency_window=ov.latency_window,
                in_flight_for=ov.in_flight_for,
            )
            self.shedder = Shedder(
                budgets,
                in_flight=lambda: self.ari_client.in_flight,
                # The steady lag: a lone stall is over by the time the calls it held
                # are looked at, and shedding for it (at least ``hold`` seconds) sent a
                # thousand calls to the fallback in a 200 calls/s benchmark.
                loop_lag=lambda: self.looplag.steady,
                clock=time.monotonic,
            )
        else:
            log.warning("overload shedding disabled: calls are never shed")
        self.service = CallService(
            self.ari_client,
            self.engine,
            self.flows,
            registry=self.registry,
            sounds_prefix=settings.flows.sounds_prefix,
            stop_grace=settings.daemon.stop_grace,
            shedder=self.shedder,
            on_answered=self.metrics.observe_answer_latency,
        )
        # FastAGI: the same engine (one log, one set of metrics) for AGI() entries.
        self.agi: AgiServer | None = None
        if settings.agi.enabled:
            agi = settings.agi
            config = AgiConfig(
                host=agi.host,
                port=agi.port,
                allow=agi.networks,
                request_timeout=agi.request_timeout,
                command_timeout=agi.command_timeout,
                stop_grace=settings.daemon.stop_grace,
            )
            self.agi = AgiServer(self.engine, self.flows, config, admit=self._admit_agi)
        self._events = Tasks("ARI events", log)  # the event pump (and the stop it awaits)
        # Calls the daemon never saw (Asterisk's CDRs) and calls a crash left open.
        cdr = settings.cdr
        self.after_crash = AfterCrash(
            self.store.engine,
            recorder,
            self._live_channels,
            cdr_file=CdrFile(settings.resolve(cdr.file)) if cdr.file else None,
            privacy=self.store.privacy,
            flow_of=self._flow_of,
            poll_interval=cdr.poll_interval,
            settle=cdr.settle,
            node=self.node,
            alive_file=settings.state_dir / ALIVE_FILE,
            retention=timedelta(days=settings.privacy.retention_days),
            noticed_within=timedelta(seconds=self.ari_config.loss_noticed_within),
            on_no_message=self.metrics.voicemail_without_message,
        )
        self.notifier = Notifier(env)  # systemd: READY once every part is up, the watchdog
        self._reloads = Tasks("reload", log)  # SIGHUP reloads in progress
        self._stop = asyncio.Event()

    def _admit_agi(self, never_shed: bool) -> str | None:
        """The overload decision for a new FastAGI call: the same shedder as over ARI."""
        if self.shedder is None:
            return None
        reason = self.shedder.admit(never_shed)
        return None if reason is None else self.shedder.explain(reason)

    def _trunk_check(self, trunk: str) -> tuple[bool, str]:
        """An emergency route's drill: the trunk's health as qualify and real calls say."""
        state = self.health.state(trunk)
        if self.selector.breaker_open(trunk):
            return False, f"{state}, failing calls (circuit breaker open)"
        if state is TrunkState.REACHABLE:
            return True, "reachable (qualify)"
        return False, f"{state} (qualify)"

    def _ari_connected(self) -> bool:
        return self.ari_client.connected

    async def _live_channels(self) -> set[str] | None:
        if not self.ari_client.connected:
            return None
        return {str(c.get("id")) for c in await self.ari_client.list_channels()}

    def _flow_of(self, dialed: str) -> str:
        flow = self.flows.for_number(dialed)
        return "" if flow is None else flow.name

    def _ami_connected(self) -> bool:
        return self.ami is not None and self.ami.connected

    def _checks(self) -> dict[str, Callable[[], bool]]:
        """What /healthz reports beside readiness (none of them makes the daemon unready)."""
        checks = {"database": lambda: self.store.recorder.database_up, "ami": self._ami_connected}
        if self.settings.cdr.file:
            checks["cdr"] = self._cdr_readable
        checks["voicemail"] = self._voicemail_ready
        return checks

    def _voicemail_problem(self) -> str | None:
        # The call service reads Asterisk's module list (it is made after the engine).
        return self.service.voicemail_problem()

    def _voicemail_ready(self) -> bool:
        # Not read yet (no connection so far) is no known fault.
        return self._voicemail_problem() is None

    def _cdr_readable(self) -> bool:
        cdr = self.after_crash.cdr_file
        return cdr is not None and cdr.problem is None

    def _probes(self) -> Probes:
        recorder = self.store.recorder
        return Probes(
            ari_connected=self._ari_connected,
            ari_reconnects=lambda: self.ari_client.reconnects,
            ari_recoveries=lambda: self.service.recoveries,
            ari_transport=lambda: self.ari_client.rest_transport,
            ari_requests=lambda: self.ari_client.rest_requests,
            ari_lanes_open=lambda: self.ari_client.rest_lanes_open,
            ami_connected=self._ami_connected,
            ami_reconnects=lambda: self.ami.reconnects if self.ami else 0,
            recorder_queue_depth=lambda: recorder.queue_depth,
            recorder_spool_size=lambda: recorder.spool_size,
            recorder_database_up=lambda: recorder.database_up,
            recorder_dropped=lambda: recorder.dropped,
            recorder_rejected=lambda: recorder.rejected,
            recorder_written=lambda: recorder.written,
            trunks=self.selector.snapshot,
            trunk_feed_live=lambda: self.health.live,
            calendars=lambda: calendar_states(
                self.flows.current, self.overrides, datetime.now(UTC)
            ),
            flows_loaded=lambda: len(self.flows.current.flows),
            feeds=self.feeds.statuses,
            loop_lag=lambda: self.looplag.take_worst(),
            ari_in_flight=lambda: self.ari_client.in_flight,
            shedding=self._shedding,
            calls_shed=lambda: (
                {} if self.shedder is None else {str(r): n for r, n in self.shedder.shed.items()}
            ),
            fallback_fates=lambda: self.after_crash.fates,
            cdr_readable=self._cdr_readable if self.settings.cdr.file else None,
            voicemail_ready=self._voicemail_ready,
        )

    def _shedding(self) -> bool:
        # Read the signals now, so the gauge is true between calls as well.
        return self.shedder is not None and self.shedder.check() is not None

    def _write_trunk_snapshot(self) -> None:
        try:
            self.selector.write_snapshot(self.trunk_snapshot)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.trunk_snapshot, exc)

    def request_stop(self) -> None:
        self._stop.set()

    def _read_credentials(self) -> list[Account]:
        http, accounts = self.settings.http, []
        if http.accounts_file:
            accounts += load_accounts(self.settings.resolve(http.accounts_file))
        if http.token_file:
            accounts += load_tokens(self.settings.resolve(http.token_file))
        return accounts

    def _reload_signal(self) -> None:
        """SIGHUP: reload in an owned task, so the handler returns to the loop at once."""
        self._reloads.spawn(self.reload(), "reload")

    async def reload(self) -> ReloadResult:
        """Reload the credentials and the flows (SIGHUP, the admin API); the flow files are
        parsed off the loop."""
        try:  # the credentials too: a revoked account loses its sessions at once
            self.credentials.replace(self._read_credentials())
            log.info("reload: %d admin credential(s)", len(self.credentials))
        except SettingsError as exc:
            log.error("reload: credentials kept as they were: %s", exc)
        result = await self.flows.reload_async()
        if result.ok:
            log.info("reload: %s", ", ".join(result.flows))
            self.feeds.wake()  # a new feed is read now, not at the next refresh
            trunks = route_trunks(self.flows.current)
            if self.monitor is not None:
                self.monitor.watch(trunks)
            else:
                self.health.set_trunks(trunks)
        else:
            log.error("reload refused, still running: %s", ", ".join(result.flows))
        return result

    def parts(self) -> list[Part]:
        """The daemon's parts in the order they start; they stop in the reverse order.

        The call log comes first so that it is closed last: whatever the other parts still
        report while they stop (calls ended by the graceful stop…) is written or spooled.
        The call service comes next (then FastAGI, when enabled): its stop lets calls finish
        while ARI still delivers their events, and hands the rest to the dialplan fallback.
        Then the closing of what a crash left open (it needs the call log and ARI up).
        systemd hears READY once all of them are up, and STOPPING first.
        """
        parts = [
            Part("call log", self.store),
            Part("calendar overrides", self.overrides),  # before calls: they apply at once
            Part("event-loop lag", self.looplag),
            Part("retention purge", self._purging()),
            Part("calendar feeds", self.feeds),  # before calls: closures known at once
            Part("reloads", self._reloads),
        ]
        if self.ami is not None and self.monitor is not None:
            parts.append(Part("AMI", _ami_session(self.ami, self.monitor)))
        parts += [
            Part("admin API", self._admin_serving()),
            Part("ARI events", self._events),  # the pump ends when the ARI client closes
            Part("ARI client", self.ari_client),
            Part("call service", self.service),
            Part("drills", self.drills),  # test calls: need ARI and the event router
            Part("after crash", self.after_crash),  # CDR import, open calls closed
        ]
        if self.agi is not None:  # after the call service: it stops taking calls first
            parts.append(Part("FastAGI", self.agi))
        parts.append(Part("systemd notify", self.notifier))  # entered last: everything is up
        return parts

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (SIGHUP reloads the flows); 0 after a clean stop, 1
        when a part failed to stop (logged).  A failure of the event pump is raised."""
        loop = asyncio.get_running_loop()
        for sig, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self._reload_signal),
        ):
            loop.add_signal_handler(sig, handler)
        names = ", ".join(sorted(self.flows.current.flows))
        log.info(
            "callflow starting: flows %s; ARI %s app %s; event loop %s",
            names,
            self.ari_config.url,
            self.ari_config.app,
            type(loop).__module__.split(".")[0],  # what runs, not what was asked: uvloop, asyncio
        )
        try:
            self._write_trunk_snapshot()
            async with Lifetime(self.parts()) as life:
                await self._serve()
                log.info("callflow stopping")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        if life.failed:
            log.error("callflow stopped; these parts failed to stop: %s", ", ".join(life.failed))
            return 1
        log.info("callflow stopped")
        return 0

    async def _serve(self) -> None:
        """Pump ARI events into the call service until a stop is asked or the pump fails."""
        pump = self._events.spawn(
            self._pump(self.ari_client, self.service, self.after_crash),
            "ari-events",
            report=False,
        )
        stop = self._events.spawn(self._stop.wait(), "stop")
        assert pump is not None and stop is not None  # the part was just entered
        await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if pump.done():
            pump.result()  # re-raises a failure of the event pump

    @contextlib.asynccontextmanager
    async def _purging(self) -> AsyncIterator[None]:
        async with Tasks("retention purge", log) as tasks:
            tasks.spawn(self._purge_daily(), "purge")
            yield

    @contextlib.asynccontextmanager
    async def _admin_serving(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if self.admin is not None:
                try:
                    await stack.enter_async_context(self.admin)
                except OSError as exc:  # calls matter more than the admin page
                    log.error("admin API not started (%s): calls go on without it", exc)
                    self.admin = None
                else:
                    log.info("admin API, /metrics and the page on %s", self.admin.url)
            yield

    async def _purge_daily(self) -> None:
        """Retention (GDPR): delete what is older than the retention period, once a day."""
        while True:
            try:
                result = await self.store.purge(datetime.now(UTC))
                log.info("retention purge: %s", result)
            except Exception as exc:  # the next day's purge tries again
                log.error("retention purge failed: %s", exc)
            await asyncio.sleep(24 * 3600)

    @staticmethod
    async def _pump(client: AriClient, service: CallService, after_crash: AfterCrash) -> None:
        async for event in client.events():
            # The calls Asterisk cuts when it stops may never reach the daemon: the CDR
            # import looks for them around each loss of Asterisk.
            kind = event.get("type")
            if kind == EVENT_DISCONNECTED:
                after_crash.pbx_lost()
            elif kind == EVENT_CONNECTED:
                after_crash.pbx_back()
            service.dispatch(event)


@contextlib.asynccontextmanager
async def _ami_session(ami: AmiClient, monitor: AmiTrunkMonitor) -> AsyncIterator[None]:
    """Keep the AMI session up (and the trunk monitor fed) for the daemon's lifetime.
    Leaving closes the client (its ``run`` returns), then the monitor, then awaits ``run``."""
    async with Tasks("AMI", log) as tasks, monitor, ami:
        tasks.spawn(ami.run(), "ami")
        yield


def route_trunks(flows: FlowSet) -> list[str]:
    """Every trunk named by a route of a flow, in first-seen order."""
    return list(
        dict.fromkeys(
            t for f in flows.flows.values() for route in f.spec.routes.values() for t in route
        )
    )


def transport_mode(value: str) -> TransportMode:
    """``[ari] transport`` as the client's type (the settings already refused other values)."""
    for mode in TRANSPORTS:
        if mode == value:
            return mode
    raise ValueError(f"unknown ARI transport {value!r}")
