"""The call service: what the daemon does with channels that Asterisk hands it.

The event router only translates ARI events into calls on this service (the shape of
wazo-calld): a new channel starts a call task, a reconnection runs recovery, a stop drains.
It owns every call task and every background task (``Tasks``); none is fire-and-forget.
Used as an async context manager, its exit is the graceful stop (``stop_grace``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ClassVar, Final, Self

from ..flow.engine import Engine
from ..flow.events import Outcome
from ..flow.live import LiveFlows
from ..flow.registry import LoadedFlow
from ..tasks import Tasks
from .call import LEG_ROLE_VAR, SHED_LABEL, AriCall
from .channels import ChannelRegistry, Event, event_channel_id
from .client import EVENT_CONNECTED, EVENT_DISCONNECTED, AriClient
from .faults import AriError
from .overload import Shedder, go_first
from .pbxmodules import VoicemailModules, voicemail_modules
from .testcall import TestCallWatch

log = logging.getLogger("callflow.ari")

# How long a detached call (a conversation left to go on at a stop) may take to log its end.
DETACH_TIMEOUT = 5.0
# Seconds between two tries of the dialplan's shed label once it was found missing.
SHED_LABEL_RETRY = 600.0


class CallService:
    def __init__(
        self,
        client: AriClient,
        engine: Engine,
        flows: LiveFlows,
        *,
        registry: ChannelRegistry | None = None,
        sounds_prefix: str = "sound:",
        fallback_context: str = "callflow-fallback",
        stop_grace: float = 30.0,
        shedder: Shedder | None = None,
        on_answered: Callable[[float], None] | None = None,
    ) -> None:
        self.client = client
        self.engine = engine
        self.flows = flows
        self.registry = registry if registry is not None else ChannelRegistry()  # may be empty
        self.sounds_prefix = sounds_prefix
        self.fallback_context = fallback_context
        self.calls: dict[str, tuple[AriCall, asyncio.Task[Outcome]]] = {}
        self.accepting = True
        self.stop_grace = stop_grace
        self._call_tasks = Tasks("calls", log)  # the tasks of self.calls
        self._background = Tasks("call service", log)
        self.recoveries = 0
        self.shedder = shedder  # None: never shed (overload shedding disabled)
        # Where shed calls enter the fallback: the dialplan's label that answers them first,
        # or None for a while after the dialplan was found without it (an older
        # extensions_callflow.conf: each try costs Asterisk a refused request and an error
        # line, just when it is overloaded).
        self._shed_label: str | None = SHED_LABEL
        self._shed_label_retry = 0.0  # time.monotonic() when the label is tried again
        self._on_answered = on_answered  # a call's answer latency, for the metrics
        # Asterisk's voicemail modules, read at each connection (None: not known: not
        # read yet, or not since this connection); the connections so far.
        self.voicemail: VoicemailModules | None = None
        self._connections = 0
        self._voicemail_told = False  # its fault was logged: say when it is gone

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(self.stop_grace)

    # -- events ---------------------------------------------------------------------------

    def dispatch(self, event: Event) -> None:
        """Route one ARI event; never blocks and never raises."""
        try:
            self._dispatch(event)
        except Exception:
            log.exception("event %s could not be handled", event.get("type"))

    def _dispatch(self, event: Event) -> None:
        kind = event.get("type")
        if kind == EVENT_CONNECTED:
            self._spawn(self._filter_events(), "event filter")
            self._spawn(self.recover(), "recovery")
            self._connections += 1
            self._spawn(self._check_voicemail(self._connections), "voicemail check")
            return
        if kind == EVENT_DISCONNECTED:
            log.warning(
                "ARI disconnected (%s): calls in progress keep their state", event.get("reason")
            )
            return
        chan_id = event_channel_id(event)
        owner = self.registry.owner(chan_id) if chan_id else None
        if owner is not None:
            owner.on_event(event)
            return
        if kind == "StasisStart":
            self._new_channel(event)

    async def _filter_events(self) -> None:
        """At each connection: Asterisk sends only what ``EVENT_TYPES`` names (decoding the
        events nothing here reads was a sizeable share of the daemon's CPU per call)."""
        try:
            await self.client.filter_events(EVENT_TYPES)
        except AriError as exc:  # the events come unfiltered: a cost, not a fault
            log.warning("ARI events: the event filter could not be set: %s", exc)

    def voicemail_problem(self) -> str | None:
        """Why Asterisk's voicemail cannot take a caller (None: it can, or not read yet)."""
        return None if self.voicemail is None else self.voicemail.problem

    async def _check_voicemail(self, connection: int) -> None:
        """At each connection (Asterisk may have restarted with other modules), until the
        list is read: Asterisk answers it only once its modules are loaded, which may take
        longer than a request at its boot.  A later connection's read supersedes it."""
        # A verdict of before this connection is stale (the admin may have fixed it).
        self.voicemail = None
        delay = 2.0
        while True:
            try:
                found = voicemail_modules(await self.client.list_modules())
                break
            except AriError as exc:
                log.warning("Asterisk's modules not read (%s): again in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                if connection != self._connections:
                    return
        if connection != self._connections:
            return
        self.voicemail = found
        if found.problem is not None:
            self._voicemail_told = True
            log.error("Asterisk's voicemail: %s", found.problem)
        elif self._voicemail_told:
            self._voicemail_told = False
            log.info("Asterisk's voicemail works again (%s)", ", ".join(found.running))
        else:
            log.debug("Asterisk's voicemail: %s runs", ", ".join(found.running))

    def _new_channel(self, event: Event) -> None:
        channel = event.get("channel") or {}
        args = event.get("args") or []
        if args and args[0] == "leg":
            # A leg whose call no longer exists (e.g. answered after the caller left).
            self._spawn(self._hangup(str(channel.get("id"))), "orphan leg hangup")
            return
        dialed = str(args[0]) if args else str((channel.get("dialplan") or {}).get("exten", ""))
        flow = self.flows.for_number(dialed)
        if self.accepting and flow is not None and self.shedder is not None:
            reason = self.shedder.admit(flow.spec.never_shed)
            if reason is not None:
                call = self._call(channel, dialed, fallback_label=self._shed_entry())
                why = self.shedder.explain(reason)
                log.warning("call=%s shed (%s): sent to the dialplan fallback", call.id, why)
                self._spawn(self._shed(call, flow, why), "shed")
                return
        call = self._call(channel, dialed)
        if not self.accepting:
            log.warning("call=%s arrived while stopping: sent to the dialplan fallback", call.id)
            self._spawn(self._to_dialplan(call, "daemon stopping"), "fallback")
            return
        if flow is None:
            log.error(
                "call=%s dialed=%s: no flow and no default: dialplan fallback", call.id, dialed
            )
            self._spawn(self._to_dialplan(call, "no flow"), "fallback")
            return
        self._start(call, flow, rescue=None)

    async def _shed(self, call: AriCall, flow: LoadedFlow, why: str) -> None:
        try:
            await self.engine.shed(flow, call, why)  # logged once, as shed (or failed)
        finally:
            call.close()
        if call.fallback_label_missing and self._shed_label is not None:
            self._shed_label = None
            self._shed_label_retry = time.monotonic() + SHED_LABEL_RETRY
            log.warning(
                "the dialplan has no label %s,s,%s (install the new extensions_callflow.conf): "
                "shed calls enter the fallback at its start, ringing unanswered; tried again "
                "in %.0f s",
                self.fallback_context,
                SHED_LABEL,
                SHED_LABEL_RETRY,
            )

    def _shed_entry(self) -> str | None:
        if self._shed_label is None and time.monotonic() >= self._shed_label_retry:
            self._shed_label = SHED_LABEL  # a new dialplan may have been loaded since
        return self._shed_label

    def _answered(self, latency: float) -> None:
        if self.shedder is not None:
            self.shedder.answered(latency)
        if self._on_answered is not None:
            self._on_answered(latency)

    def _start(self, call: AriCall, flow: LoadedFlow, rescue: str | None) -> None:
        coro = (
            self.engine.run(flow, call)
            if rescue is None
            else self.engine.rescue(flow, call, rescue)
        )
        if flow.spec.never_shed:
            coro = _going_first(coro)  # an emergency line: its requests skip the queue
        task = self._call_tasks.spawn(coro, f"call-{call.id}", report=False)  # _call_done logs
        if task is None:  # only after stop(), which no longer starts calls
            log.error("call=%s not started: the call service has stopped", call.id)
            call.close()
            return
        self.calls[call.id] = (call, task)
        task.add_done_callback(functools.partial(self._call_done, call.id))

    def _call_done(self, call_id: str, task: asyncio.Task[Outcome]) -> None:
        entry = self.calls.pop(call_id, None)
        if entry is not None:
            entry[0].close()
        if not task.cancelled() and task.exception() is not None:
            log.error("call=%s task failed", call_id, exc_info=task.exception())

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        self._background.spawn(coro, what)

    async def _hangup(self, channel_id: str) -> None:
        with contextlib.suppress(AriError):
            await self.client.hangup(channel_id)

    def _call(
        self, channel: dict[str, Any], dialed: str, fallback_label: str | None = None
    ) -> AriCall:
        return AriCall(
            self.client,
            self.registry,
            channel,
            dialed=dialed,
            sounds_prefix=self.sounds_prefix,
            fallback_context=self.fallback_context,
            fallback_label=fallback_label,
            on_answered=self._answered,
        )

    async def _to_dialplan(self, call: AriCall, why: str) -> None:
        log.info("call=%s handed to the dialplan fallback: %s", call.id, why)
        try:
            await call.last_resort()  # ends its legs; hangs up if the dialplan is unreachable
        except Exception:
            log.exception("call=%s could not be sent to the dialplan fallback (%s)", call.id, why)
        finally:
            call.close()

    # -- recovery -------------------------------------------------------------------------

    async def recover(self) -> None:
        """After (re)connecting: channels in our application that no call task owns were
        stranded by a restart or a drop.  Live conversations are left alone; stray legs are
        hung up; stranded callers go to their flow's fallback (or the dialplan's)."""
        try:
            ids = await self.client.channels_in_app()
            # Every channel (a ringing leg is not in the application yet), but only when a
            # call in progress needs checking: at a first connection, none does.
            alive: set[str] = set()
            if self.calls:
                alive = {str(c.get("id")) for c in await self.client.list_channels()}
        except AriError as exc:
            log.error("recovery: cannot list channels: %s", exc)
            return
        # Calls in progress whose channels vanished while we were disconnected end now
        # (and are logged) instead of waiting for events that will never come.
        for call, _task in list(self.calls.values()):
            call.reconcile(alive)
        # The others ask what they wait for (a prompt's end, a leg's answer): its event may
        # have been lost too, and the wait would never end (a caller left in silence).
        in_app = set(ids)
        calls = [call for call, _ in self.calls.values()]
        checks = await asyncio.gather(*(c.resync(in_app) for c in calls), return_exceptions=True)
        for call, err in zip(calls, checks, strict=True):
            if isinstance(err, Exception):  # a bug in one call must not stop the recovery
                log.error("recovery: call=%s not re-checked", call.id, exc_info=err)
        stranded = [i for i in ids if i not in self.registry]
        if not stranded:
            return
        self.recoveries += 1
        bridged = await self._bridged_channels()
        for chan_id in stranded:
            try:
                await self._recover_channel(chan_id, bridged)
            except AriError as exc:
                log.warning("recovery: channel %s: %s", chan_id, exc)

    async def _bridged_channels(self) -> dict[str, tuple[str, list[str]]]:
        out: dict[str, tuple[str, list[str]]] = {}
        try:
            bridges = await self.client.request("GET", "/bridges")
        except AriError:
            return out
        for b in bridges or []:
            members = [str(c) for c in b.get("channels", [])]
            for c in members:
                out[c] = (str(b.get("id")), members)
        return out

    async def _recover_channel(
        self, chan_id: str, bridged: dict[str, tuple[str, list[str]]]
    ) -> None:
        if chan_id in self.registry:
            return
        if chan_id in bridged:
            bridge_id, members = bridged[chan_id]
            if len(members) >= 2:
                # Registered with the registry; its clean-up runs among our background tasks.
                BridgeWatch(self.client, self.registry, bridge_id, members, self._background)
                log.info("recovery: conversation in bridge %s left to go on", bridge_id)
                return
            log.info(
                "recovery: channel %s alone in bridge %s: the conversation is over",
                chan_id,
                bridge_id,
            )
            await self._hangup(chan_id)
            with contextlib.suppress(AriError):
                await self.client.destroy_bridge(bridge_id)
            return
        channel = await self.client.get_channel(chan_id)
        role = ""
        with contextlib.suppress(AriError):
            role = await self.client.get_variable(chan_id, LEG_ROLE_VAR)
        if role == "leg":
            log.info("recovery: stray leg %s hung up", chan_id)
            await self._hangup(chan_id)
            return
        dialed = str((channel.get("dialplan") or {}).get("exten", ""))
        call = self._call(channel, dialed)
        await call.stop_stray_playbacks()
        flow = self.flows.for_number(dialed)
        log.warning("recovery: call=%s was stranded: sent to the fallback", chan_id)
        if flow is None or flow.spec.fallback is None:
            await self._to_dialplan(call, "recovered without a flow fallback")
            return
        self._start(call, flow, rescue="recovered after a restart or reconnection")

    # -- stopping -------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """Take no new call; let calls finish for ``grace`` s; then send the rest to the
        dialplan fallback.  A conversation already bridged is left to go on: its call is
        detached (logged as reached, nothing hung up) instead of cancelled, which would
        tear the bridge down and hang up the callee (a review found that: a patient
        talking to the doctor or the SAMU was cut by ``systemctl restart``)."""
        self.accepting = False
        try:
            tasks = [t for _, t in self.calls.values()]
            if tasks:
                log.info("stopping: waiting up to %.0f s for %d call(s)", grace, len(tasks))
                await asyncio.wait(tasks, timeout=grace)
            detached = []
            for call, task in list(self.calls.values()):
                if call.bridged:
                    call.detach()
                    detached.append(task)
            if detached:  # they end at once (no request left to make): a bound all the same
                log.info("stopping: %d conversation(s) left to go on", len(detached))
                await asyncio.wait(detached, timeout=DETACH_TIMEOUT)
            for call, task in list(self.calls.values()):
                bridged = call.bridged or call.detached
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                if not bridged and not call.gone:
                    await self._to_dialplan(call, "daemon stopping")
        finally:  # whatever failed above, no task outlives the service
            await self._call_tasks.aclose()
            await self._background.aclose()


async def _going_first(coro: Coroutine[Any, Any, Outcome]) -> Outcome:
    go_first()  # in the call's own task, so in its context alone
    return await coro


class BridgeWatch:
    """A conversation found after a restart: when one side leaves, end the other."""

    def __init__(
        self,
        client: AriClient,
        registry: ChannelRegistry,
        bridge_id: str,
        members: list[str],
        tasks: Tasks,
    ) -> None:
        self.client = client
        self.registry = registry
        self.bridge_id = bridge_id
        self.members = members
        self._tasks = tasks  # the call service's: its stop cancels and awaits the clean-up
        self._ending = False
        for m in members:
            registry.register(m, self)

    #: What it reacts to (the call service's event filter lets these through).
    EVENTS: ClassVar[frozenset[str]] = frozenset(
        {"StasisEnd", "ChannelDestroyed", "ChannelHangupRequest"}
    )

    def on_event(self, event: Event) -> None:
        if event.get("type") not in self.EVENTS:
            return
        if not self._ending:
            self._ending = True
            self._tasks.spawn(self._end(), f"bridge-{self.bridge_id}")

    async def _end(self) -> None:
        for m in self.members:
            self.registry.unregister(m)
            with contextlib.suppress(AriError):
                await self.client.hangup(m)
        with contextlib.suppress(AriError):
            await self.client.destroy_bridge(self.bridge_id)


#: Every event type the dispatch above reads: a new channel's ``StasisStart``, and what the
#: owners of channels (a call, a recovered conversation, a drill's test call) react to.
#: The event filter asks Asterisk for these alone; tests/unit/test_event_filter.py checks
#: that no event type is read anywhere else.
EVENT_TYPES: Final[frozenset[str]] = (
    frozenset({"StasisStart"}) | AriCall.EVENTS | BridgeWatch.EVENTS | TestCallWatch.EVENTS
)
