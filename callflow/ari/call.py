"""The ``Call`` protocol carried out over ARI.

An ``AriCall`` owns the caller's channel and every leg it originates: the event router
hands it their events (``on_event``, never blocking), and the engine awaits its methods.
Every wait races the caller's hangup, so a caller who hangs up ends any step at once, and
every leg is hung up when the step that made it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ..errors import CallerHangup, CallLost, TelephonyError
from ..telephony import (
    PUSH_HANGUP_HANDLER,
    VOICEMAIL_CONTEXT,
    VOICEMAIL_STATUS_HANDLER,
    DialResult,
    DialStatus,
    Driver,
    Handoff,
    mailbox_probe,
    voicemail_refused,
)
from .channels import ChannelRegistry, Event, event_channel_id
from .client import AriClient
from .faults import (
    AriBadRequest,
    AriConnectionError,
    AriError,
    AriNotFound,
    AriServerError,
    AriTimeout,
)
from .overload import go_first

log = logging.getLogger("callflow.ari.call")

T = TypeVar("T")

LEG_ROLE_VAR = "CALLFLOW_ROLE"  # set to "leg" on every channel we originate
# Playback ids are ``<channel>:pb:<n>`` with n cycling through a few slots, so that a daemon
# restarted mid-prompt can find and stop a stranded channel's playback (ARI cannot list
# playbacks, and a channel busy playing queues every other request until the prompt ends).
PLAYBACK_SLOTS = 8


def playback_ids(channel_id: str) -> list[str]:
    return [f"{channel_id}:pb:{n}" for n in range(PLAYBACK_SLOTS)]


VOICEMAIL_BOX_VAR = "CALLFLOW_VOICEMAIL_BOX"

# Where a shed call enters the dialplan fallback: the label of its "s" extension at which
# the dialplan answers the caller and asks them to hold before ringing the secretariat, so
# that an overloaded daemon (or PBX) never leaves a caller waiting on a ring.
SHED_LABEL = "shed"

# The longest a prompt is waited for.  The daemon cannot know a sound's length, and the
# reconnection check (``resync``) only helps once the events come back: past this, the
# playback's end is taken as lost and the call as failed by the PBX, never silent forever.
PLAYBACK_LIMIT = 600.0


class PlaybackLost(AriTimeout):
    """A prompt's end never came (its event was lost): a PBX fault, so the call goes to the
    dialplan fallback and is logged failed."""


# Hangup causes (Q.850) of a leg that never answered, as a dial status.
_CAUSES: dict[int, DialStatus] = {
    17: DialStatus.BUSY,  # user busy (SIP 486)
    21: DialStatus.BUSY,  # call rejected by the callee (SIP 603)
    18: DialStatus.NOANSWER,  # no user responding
    19: DialStatus.NOANSWER,  # no answer
    1: DialStatus.CHANUNAVAIL,  # unallocated number (SIP 404)
    3: DialStatus.CHANUNAVAIL,  # no route
    20: DialStatus.CHANUNAVAIL,  # subscriber absent
    27: DialStatus.CHANUNAVAIL,  # destination out of order
    38: DialStatus.CHANUNAVAIL,  # network out of order
    34: DialStatus.CONGESTION,  # no circuit (SIP 503)
    41: DialStatus.CONGESTION,  # temporary failure
    42: DialStatus.CONGESTION,  # switching equipment congestion
    44: DialStatus.CONGESTION,
}
_FINAL_DIALSTATUS = {s.value: s for s in DialStatus}


def leg_status(dialstatus: str | None, cause: int | None) -> DialStatus:
    """The status of a leg that ended before answering."""
    if dialstatus and dialstatus in _FINAL_DIALSTATUS and dialstatus != "ANSWER":
        return _FINAL_DIALSTATUS[dialstatus]
    if cause is not None and cause in _CAUSES:
        return _CAUSES[cause]
    return DialStatus.FAILED


class _Flag:
    """Set once and never cleared, like an ``asyncio.Event``, but waited on as a future: a
    wait adds a callback to it instead of starting (and then cancelling) a task."""

    __slots__ = ("_future", "_set")

    def __init__(self) -> None:
        self._set = False
        self._future: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    def is_set(self) -> bool:
        return self._set

    def future(self) -> asyncio.Future[None]:
        """Done once set (shared by every wait: never cancel it)."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
            if self._set:
                self._future.set_result(None)
        return self._future


class _Keys:
    """The keys a channel received and nobody took yet, in order.  A wait for the next one
    is a future shared by every wait (``ready``), like ``_Flag``'s: an ``asyncio.Queue``'s
    ``get()`` needed a task of its own per wait, started and then cancelled at each prompt.
    A key is taken (``pop``) only by the wait that won, so none is lost to a race."""

    __slots__ = ("_keys", "_ready")

    def __init__(self) -> None:
        self._keys: deque[str] = deque()
        self._ready: asyncio.Future[None] | None = None

    def put(self, key: str) -> None:
        self._keys.append(key)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def empty(self) -> bool:
        return not self._keys

    def pop(self) -> str:
        """The oldest key (there must be one)."""
        return self._keys.popleft()

    def clear(self) -> None:
        self._keys.clear()

    def ready(self) -> asyncio.Future[None]:
        """Done once a key is there (shared by every wait: never cancel it)."""
        if self._ready is None or (self._ready.done() and not self._keys):
            self._ready = asyncio.get_running_loop().create_future()
        if self._keys and not self._ready.done():
            self._ready.set_result(None)
        return self._ready


@dataclass
class _Channel:
    """What we track of one channel: its hangup, its keys and its pending playbacks."""

    id: str
    gone: _Flag = field(default_factory=_Flag)
    dtmf: _Keys = field(default_factory=_Keys)
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # legs: entered Stasis
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # legs: ringing/progress
    dialstatus: str | None = None
    cause: int | None = None
    playbacks: int = 0
    playing: str | None = None  # a playback not known to be over (e.g. its task was cancelled)

    def next_playback_id(self) -> str:
        self.playbacks += 1
        return f"{self.id}:pb:{self.playbacks % PLAYBACK_SLOTS}"

    def flush_dtmf(self) -> None:
        self.dtmf.clear()


async def _any_done(futures: Sequence[asyncio.Future[Any]], timeout: float | None) -> None:
    """Return once one of ``futures`` is done, or ``timeout`` s have passed; never cancels
    nor awaits them.  ``asyncio.wait(..., FIRST_COMPLETED)`` without its set building, type
    checks and counting (a third of its cost, on each wait of a call), and without a pass
    through the loop when one is done already."""
    if any(f.done() for f in futures):
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        if not waiter.done():
            waiter.set_result(None)

    for f in futures:
        f.add_done_callback(wake)
    timer = None if timeout is None else loop.call_later(timeout, wake, None)
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        for f in futures:
            f.remove_done_callback(wake)


class _Gone(Exception):
    """The channel being waited on has hung up."""


class AriCall:
    def __init__(
        self,
        client: AriClient,
        registry: ChannelRegistry,
        channel: dict[str, Any],
        *,
        dialed: str,
        sounds_prefix: str = "sound:",
        voicemail_context: str = VOICEMAIL_CONTEXT,
        fallback_context: str = "callflow-fallback",
        fallback_label: str | None = None,
        on_answered: Callable[[float], None] | None = None,
    ) -> None:
        self.client = client
        # Seconds from the call's arrival (this object) to Asterisk's answer: overload.
        self._arrived = time.monotonic()
        self._on_answered = on_answered
        self.registry = registry
        self._chan = _Channel(str(channel["id"]))
        caller = channel.get("caller") or {}
        self._caller = str(caller.get("number") or "")
        self._dialed = dialed
        self._prefix = sounds_prefix
        self._voicemail_context = voicemail_context
        self._fallback_context = fallback_context
        # Where in the fallback's "s" extension this call enters it: None, at its start; a
        # shed call at the label where the dialplan answers it first (``SHED_LABEL``).
        self._fallback_label = fallback_label
        self.fallback_label_missing = False  # Asterisk's dialplan lacked it (found at the handoff)
        self._playbacks: dict[str, asyncio.Future[str]] = {}
        self._legs: dict[str, _Channel] = {}
        # What a reconnection must check (``resync``): the playbacks Asterisk accepted and
        # the legs being rung, whose ending or answering event may have been lost.
        self._played: set[str] = set()
        self._ringing: set[str] = set()
        self.answered = channel.get("state") == "Up"
        self.bridged = False  # currently talking to someone through a bridge
        # Set by ``detach``: the daemon stops, the conversation goes on without it.
        self._detached = asyncio.Event()
        self.left = False  # handed back to the dialplan: not ours to hang up any more
        self._left_app = False  # its StasisEnd came after we handed it to the dialplan
        self.lost = False  # the channel vanished while we were disconnected, or the PBX cut it
        self._hanging_up = False  # we asked Asterisk to hang the caller up
        registry.register(self._chan.id, self)

    # -- identity ------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._chan.id

    @property
    def caller(self) -> str:
        return self._caller

    @property
    def dialed(self) -> str:
        return self._dialed

    @property
    def driver(self) -> Driver:
        return Driver.ARI

    @property
    def gone(self) -> bool:
        return self._chan.gone.is_set()

    # -- events (from the router; never block) --------------------------------------------

    def on_event(self, event: Event) -> None:
        handler = self._HANDLERS.get(event.get("type", ""))
        if handler is not None:
            handler(self, event)

    def _chan_of(self, event: Event) -> _Channel | None:
        chan_id = event_channel_id(event)
        return self._chan if chan_id == self._chan.id else self._legs.get(chan_id or "")

    def _on_playback_end(self, event: Event) -> None:
        pb = event.get("playback") or {}
        pb_id = str(pb.get("id"))
        fut = self._playbacks.pop(pb_id, None)
        if fut is not None and not fut.done():
            fut.set_result(str(pb.get("state", "done")))
        chan = self._chan_of(event)
        if chan is not None and chan.playing == pb_id:
            chan.playing = None  # over by itself: nothing left to stop

    def _on_dtmf(self, event: Event) -> None:
        chan = self._chan_of(event)
        if chan is not None:
            chan.dtmf.put(str(event.get("digit", "")))

    def _on_gone(self, event: Event) -> None:
        chan = self._chan_of(event)
        if chan is None:
            return
        kind = event["type"]
        cause = event.get("cause")
        if kind == "ChannelHangupRequest" and event.get("soft") and chan is self._chan:
            # A soft hangup request is Asterisk's own (it is shutting down or
            # restarting, or an operator cut the call), never the caller's BYE (that
            # one is not soft): the call is lost, not abandoned (issue #12).
            if not self._hanging_up:
                self.lost = True
            chan.gone.set()
            return
        if isinstance(cause, int) and chan.cause is None:
            chan.cause = cause
        if kind == "StasisEnd" and chan is self._chan and self.left:
            self._left_app = True  # the continue was carried out, whatever its answer
            return  # we sent it to the dialplan ourselves
        chan.gone.set()

    def _on_stasis_start(self, event: Event) -> None:
        chan = self._chan_of(event)
        if chan is not None and chan is not self._chan:
            chan.answered.set()

    def _on_dial(self, event: Event) -> None:
        chan = self._chan_of(event)
        status = event.get("dialstatus")
        if chan is not None and isinstance(status, str) and status:
            chan.dialstatus = status
            if status in ("RINGING", "PROGRESS", "PROCEEDING"):
                chan.progress.set()

    def _on_state(self, event: Event) -> None:
        chan = self._chan_of(event)
        state = (event.get("channel") or {}).get("state")
        # "Up" is progress only: a leg is answered for us at its StasisStart, which
        # follows (every leg is originated into our app); a request on it before then
        # is refused 409 (not in Stasis), which failed an escalation's callee message.
        if chan is not None and chan is not self._chan and state in ("Ringing", "Ring", "Up"):
            chan.progress.set()

    # The events a call reacts to, and how.  ``EVENTS`` is what the call service asks
    # Asterisk to send (its event filter): an event type missing here is never decoded.
    _HANDLERS: ClassVar[dict[str, Callable[[AriCall, Event], None]]] = {
        "PlaybackFinished": _on_playback_end,
        "PlaybackFailed": _on_playback_end,
        "ChannelDtmfReceived": _on_dtmf,
        "StasisEnd": _on_gone,
        "ChannelDestroyed": _on_gone,
        "ChannelHangupRequest": _on_gone,
        "StasisStart": _on_stasis_start,
        "Dial": _on_dial,
        "ChannelStateChange": _on_state,
    }
    EVENTS: ClassVar[frozenset[str]] = frozenset(_HANDLERS)

    def reconcile(self, alive: set[str]) -> None:
        """After a reconnection: channels of this call that Asterisk no longer has (it
        restarted, or events were lost while disconnected) are gone, so waits end."""
        for chan in (self._chan, *self._legs.values()):
            if chan.id not in alive and not chan.gone.is_set():
                log.warning("call=%s channel %s vanished while disconnected", self.id, chan.id)
                self.lost = self.lost or chan is self._chan
                chan.gone.set()

    async def resync(self, in_app: Container[str]) -> None:
        """After a reconnection: ask Asterisk about what this call waits for, since the
        event ending the wait may have been lost while disconnected (``in_app``: the
        channels in our application now)."""
        for pb_id in list(self._played):
            fut = self._playbacks.get(pb_id)
            if fut is None or fut.done():
                continue
            try:
                await self.client.get_playback(pb_id)
            except AriNotFound:  # over while we were away
                log.warning("call=%s playback %s ended while disconnected", self.id, pb_id)
                if not fut.done():
                    fut.set_result("done")
            except AriError as exc:
                log.warning("call=%s playback %s not checked: %s", self.id, pb_id, exc)
        for leg_id in list(self._ringing):
            leg = self._legs.get(leg_id)
            if leg is None or leg.gone.is_set() or leg.answered.is_set():
                continue
            try:
                state = (await self.client.get_channel(leg_id)).get("state")
            except AriNotFound:  # it ended (busy, rejected, hung up) while we were away
                log.warning("call=%s %s ended while disconnected", self.id, leg_id)
                leg.gone.set()
                continue
            except AriError as exc:
                log.warning("call=%s %s not checked: %s", self.id, leg_id, exc)
                continue
            if state in ("Ringing", "Ring", "Up"):
                leg.progress.set()
            # Answered and in Stasis: its StasisStart was lost (one still to come would be
            # sent on the new connection, so an Up leg not in Stasis yet is left to it).
            if state == "Up" and leg_id in in_app:
                log.warning("call=%s %s answered while disconnected", self.id, leg_id)
                leg.answered.set()

    # -- waiting ---------------------------------------------------------------------------

    async def _race(
        self, aw: Awaitable[T], *, timeout: float | None, watch: Sequence[_Channel] = ()
    ) -> T:
        """Await ``aw``; raise ``_Gone`` if a watched channel hangs up first (the caller is
        always watched: ``CallerHangup``), ``TimeoutError`` after ``timeout``."""
        main = asyncio.ensure_future(aw)
        try:
            await self._first([main], timeout, watch)
        except BaseException:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await main
            raise
        return main.result()

    async def _first(
        self,
        futures: Sequence[asyncio.Future[Any]],
        timeout: float | None,
        watch: Sequence[_Channel],
    ) -> set[asyncio.Future[Any]]:
        """Wait until one of ``futures`` is done (they are neither cancelled nor awaited
        here) and return those that are; raise as ``_race`` does when a watched channel
        hangs up first, or after ``timeout``."""
        # The caller once: a prompt played to the caller watches it too.  A hangup is a
        # shared future of its channel, so a wait costs no task of its own.
        chans = [self._chan, *(c for c in watch if c is not self._chan)]
        await _any_done([*futures, *(c.gone.future() for c in chans)], timeout)
        won = {f for f in futures if f.done()}
        if won:
            return won
        if self._chan.gone.is_set():
            raise self._hung_up()
        if any(c.gone.is_set() for c in chans):
            raise _Gone()
        raise TimeoutError

    async def _key(
        self, chan: _Channel, timeout: float | None, watch: Sequence[_Channel] = ()
    ) -> str:
        """The next key pressed on ``chan``; raises as ``_race`` does."""
        if chan.dtmf.empty():
            await self._first([chan.dtmf.ready()], timeout, watch)
        return chan.dtmf.pop()

    async def _caller_op(self, aw: Awaitable[T]) -> T:
        """A REST call on the caller's channel: a missing channel means the caller left."""
        if self.gone:
            raise self._hung_up()
        try:
            return await aw
        except AriNotFound:
            self._chan.gone.set()
            raise CallerHangup(f"caller channel {self.id} is gone") from None

    async def _quiet(self, chan: _Channel) -> None:
        """Stop what still plays on ``chan`` (a prompt a key interrupted) before a request
        Asterisk would queue behind it.  The stop is put off until then, so that a hangup
        (which ends the prompt anyway) costs no stop request."""
        pb_id = chan.playing
        if pb_id is not None:
            chan.playing = None
            with contextlib.suppress(AriError):
                await self.client.stop_playback(pb_id, chan.id)

    def _hung_up(self) -> CallerHangup:
        if self.lost:
            return CallLost(
                f"channel {self.id} vanished or was cut by the PBX (Asterisk restarted, "
                "an operator hung it up, or events were lost)"
            )
        return CallerHangup(f"caller hung up ({self.id})")

    # -- the Call protocol -----------------------------------------------------------------

    async def answer(self) -> None:
        if not self.answered:
            await self._caller_op(self.client.answer(self.id))
            self.answered = True
            if self._on_answered is not None:
                self._on_answered(time.monotonic() - self._arrived)

    async def _play_on(self, chan: _Channel, prompts: Sequence[str], barge_in: bool) -> str:
        for prompt in prompts:
            if barge_in and not chan.dtmf.empty():
                return chan.dtmf.pop()
            await self._quiet(chan)
            pb_id = chan.next_playback_id()
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._playbacks[pb_id] = fut
            chan.playing = pb_id
            try:
                await self.client.play(chan.id, self._prefix + prompt, playback_id=pb_id)
                self._played.add(pb_id)
                if not barge_in:
                    state = await self._play_race(fut, chan, prompt)
                else:
                    key = chan.dtmf.ready()
                    try:
                        done = await self._first([fut, key], PLAYBACK_LIMIT, [chan])
                    except TimeoutError:
                        raise self._playback_lost(chan, prompt) from None
                    if key in done:
                        # The prompt is stopped by the next request that needs it stopped
                        # (``_quiet``), not now: if that is a hangup, it costs nothing.
                        return chan.dtmf.pop()
                    state = fut.result()
                chan.playing = None
                if state == "failed":
                    log.warning("call=%s sound %r could not be played", self.id, prompt)
            finally:
                self._playbacks.pop(pb_id, None)
                self._played.discard(pb_id)
        return ""

    async def _play_race(self, aw: Awaitable[T], chan: _Channel, prompt: str) -> T:
        try:
            return await self._race(aw, timeout=PLAYBACK_LIMIT, watch=[chan])
        except TimeoutError:
            raise self._playback_lost(chan, prompt) from None

    def _playback_lost(self, chan: _Channel, prompt: str) -> PlaybackLost:
        log.error("call=%s sound %r never ended: its end was lost", self.id, prompt)
        return PlaybackLost(
            f"no end of playback on {chan.id} in {PLAYBACK_LIMIT:.0f} s (event lost?)"
        )

    async def play(self, prompts: Sequence[str], *, barge_in: bool = False) -> str:
        try:
            return await self._caller_op(self._play_on(self._chan, prompts, barge_in))
        except _Gone:  # pragma: no cover - only the caller is watched here
            raise CallerHangup(self.id) from None

    async def collect(
        self,
        prompt: str | None,
        *,
        max_digits: int,
        first_timeout: float,
        inter_timeout: float,
        barge_in: bool = True,
    ) -> str:
        # Keys pressed before the question are not an answer to it.
        self._chan.flush_dtmf()
        digits = ""
        if prompt:
            digits = await self.play([prompt], barge_in=barge_in)
        if digits and len(digits) < max_digits:
            await self._quiet(self._chan)  # more keys to come: the prompt must not go on
        while len(digits) < max_digits:
            wait = first_timeout if not digits else inter_timeout
            try:
                key = await self._key(self._chan, wait)
            except TimeoutError:
                break
            if key == "#" and digits and max_digits > 1:
                break  # '#' ends a multi-digit entry
            digits += key
        return digits

    async def _originate(self, target: str, timeout: float, caller_id: str | None) -> _Channel:
        leg = _Channel(f"leg-{uuid.uuid4()}")
        self._legs[leg.id] = leg
        self.registry.register(leg.id, self)
        try:
            await self.client.originate(
                target,
                app_args=f"leg,{self.id}",
                channel_id=leg.id,
                # Asterisk's own ring limit is a safety net; our timer ends ringing first.
                timeout=int(timeout) + 5,
                caller_id=caller_id,
                variables={LEG_ROLE_VAR: "leg"},
            )
        except AriConnectionError:
            # No answer: the leg may ring all the same (its id is ours): hang it up.
            await self._end_leg(leg)
            raise
        except AriError:
            self._drop_leg(leg)
            raise
        return leg

    def _drop_leg(self, leg: _Channel) -> None:
        self._legs.pop(leg.id, None)
        self.registry.unregister(leg.id)

    async def _end_leg(self, leg: _Channel) -> None:
        if not leg.gone.is_set():
            with contextlib.suppress(AriError):
                await self.client.hangup(leg.id)
        self._drop_leg(leg)

    async def _hold(self, on: bool) -> None:
        """Music on hold for an answered caller while a leg rings (ringback if unanswered)."""
        await self._quiet(self._chan)
        with contextlib.suppress(AriError):
            if on and self.answered:
                await self.client.start_moh(self.id)
            elif on:
                await self.client.ring(self.id)
            elif self.answered:
                await self.client.stop_moh(self.id)

    async def _ring_leg(self, leg: _Channel, timeout: float, setup: float | None) -> DialStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._ringing.add(leg.id)
        try:
            if setup is not None and setup < timeout:
                try:
                    await self._race(leg.progress.wait(), timeout=setup, watch=[leg])
                except TimeoutError:
                    if not leg.answered.is_set():
                        log.info("call=%s %s: no sign of life in %.1f s", self.id, leg.id, setup)
                        return DialStatus.CHANUNAVAIL
            remaining = max(0.0, deadline - loop.time())
            await self._race(leg.answered.wait(), timeout=remaining, watch=[leg])
            return DialStatus.ANSWER
        except TimeoutError:
            return DialStatus.NOANSWER
        except _Gone:
            return leg_status(leg.dialstatus, leg.cause)
        finally:
            self._ringing.discard(leg.id)

    async def _bridge_until_end(self, leg: _Channel) -> None:
        """Bridge the caller with ``leg`` and wait until either hangs up."""
        await self.answer()
        bridge = await self.client.create_bridge("mixing")
        bridge_id = str(bridge["id"])
        self.bridged = True
        try:
            await self._quiet(self._chan)
            await self._quiet(leg)  # a callee who confirmed during the announce
            try:
                await self.client.add_channel(bridge_id, [self.id, leg.id])
            except AriBadRequest:
                # Asterisk answers 400 "Channel not found" when a channel of the list is
                # gone: a caller who hung up as the callee answered (its events still on
                # the way) is a caller hangup, not a technical failure (issue #12).
                await self._caller_op(self.client.get_channel(self.id))
                raise
            with contextlib.suppress(_Gone, CallerHangup):
                await self._race(self._detached.wait(), timeout=None, watch=[leg])
        finally:
            self.bridged = False
            if not self.detached:  # left to go on: the bridge is the conversation
                with contextlib.suppress(AriError):
                    await self.client.destroy_bridge(bridge_id)

    async def dial(
        self,
        target: str,
        *,
        timeout: float,
        caller_id: str | None = None,
        setup_timeout: float | None = None,
        while_ringing: Sequence[str] = (),
    ) -> DialResult:
        return await self._dial(target, timeout, caller_id, None, setup_timeout, while_ringing)

    async def dial_confirm(
        self,
        target: str,
        *,
        timeout: float,
        confirm: str,
        announce: Sequence[str],
        confirm_timeout: float,
        setup_timeout: float | None = None,
    ) -> DialResult:
        confirming = (confirm, announce, confirm_timeout)
        return await self._dial(target, timeout, None, confirming, setup_timeout, ())

    async def _dial(
        self,
        target: str,
        timeout: float,
        caller_id: str | None,
        confirm: tuple[str, Sequence[str], float] | None,
        setup_timeout: float | None,
        while_ringing: Sequence[str],
    ) -> DialResult:
        if self.gone:
            raise CallerHangup(self.id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        leg = await self._originate(target, timeout, caller_id)
        message: str | None = None
        try:
            # Inside the try: a caller gone as the message starts must not leave the leg
            # ringing (review: the SAMU rang on, then was hung up on when it answered).
            if while_ringing:
                message = await self._start_message(while_ringing)
            else:
                await self._hold(True)
            status = await self._ring_leg(leg, timeout, setup_timeout)
            delay = loop.time() - started
            if status is DialStatus.ANSWER and confirm is not None:
                status = await self._confirm(leg, *confirm)
            if message is not None:
                await self._stop_message(message)
                message = None
            else:
                await self._hold(False)
            if status is not DialStatus.ANSWER:
                return DialResult(status)
            await self._bridge_until_end(leg)
            if self.detached:
                return DialResult(DialStatus.ANSWER, delay, caller_hung_up=True, detached=True)
            # The caller still here: the callee hung up, and the flow may go on (a survey).
            return DialResult(DialStatus.ANSWER, delay, caller_hung_up=self.gone)
        finally:
            if message is not None:
                await self._stop_message(message)
            if self.detached:
                self._drop_leg(leg)  # the callee talks on: only forgotten here
            else:
                await self._end_leg(leg)

    async def _start_message(self, prompts: Sequence[str]) -> str | None:
        """Start playing ``prompts`` to the caller without waiting for them to end."""
        try:
            await self.answer()
            await self._quiet(self._chan)
            pb_id = self._chan.next_playback_id()
            self._chan.playing = pb_id
            media = [self._prefix + p for p in prompts]
            await self.client.play(self.id, media, playback_id=pb_id)
        except CallerHangup:
            raise
        except AriError as exc:
            log.warning("call=%s message while ringing failed: %s", self.id, exc)
            return None
        return pb_id

    async def _stop_message(self, pb_id: str) -> None:
        # A playing channel queues the bridge request: stop the message first (unless it
        # is over already: then the stop would be a needless round trip).
        if self._chan.playing == pb_id:
            await self._quiet(self._chan)

    async def _confirm(
        self, leg: _Channel, key: str, announce: Sequence[str], wait: float
    ) -> DialStatus:
        """Ask the callee to accept: only the confirm key bridges the call."""
        try:
            pressed = ""
            if announce:
                pressed = await self._play_on(leg, announce, barge_in=True)
            if not pressed:
                pressed = await self._key(leg, wait, watch=[leg])
        except (TimeoutError, _Gone, AriNotFound):
            return DialStatus.DECLINED
        return DialStatus.ANSWER if pressed == key else DialStatus.DECLINED

    async def voicemail(self, box: str) -> bool:
        # ARI has no voicemail of its own: hand the caller to the dialplan's voicemail,
        # once Asterisk says it has the mailbox (else it would hang up on the caller).
        await self._quiet(self._chan)
        if not await self._mailbox_ready(box):
            return False
        await self._caller_op(self.client.set_variable(self.id, VOICEMAIL_BOX_VAR, box))
        await self._caller_op(
            self.client.set_variable(self.id, PUSH_HANGUP_HANDLER, VOICEMAIL_STATUS_HANDLER)
        )
        self.left = True
        try:
            await self._caller_op(
                self.client.continue_in_dialplan(self.id, self._voicemail_context, "s", 1)
            )
        except TelephonyError:
            self.left = False
            raise
        return True

    async def _mailbox_ready(self, box: str) -> bool:
        try:
            exists = await self._caller_op(self.client.get_variable(self.id, mailbox_probe(box)))
        except AriServerError as exc:
            if exc.status != 500 or "function" not in exc.message.lower():
                raise  # Asterisk failing: a link fault, as for any request
            # "Unable to read provided function": VM_INFO() is not registered.
            log.error(voicemail_refused(self.id, box, "no voicemail module runs in Asterisk"))
            return False
        if exists != "1":
            log.error(voicemail_refused(self.id, box, "not in Asterisk's voicemail.conf"))
            return False
        return True

    async def stop_stray_playbacks(self) -> None:
        """Stop whatever a previous daemon left playing on this channel (recovery)."""
        for pb_id in playback_ids(self.id):
            with contextlib.suppress(AriError):
                await self.client.stop_playback(pb_id, self.id)

    async def last_resort(self) -> Handoff:
        """Nobody could be reached: hand the caller to the dialplan fallback, which rings
        the secretariat, the outside secretariat and voicemail on its own."""
        if self.left and not self.gone:
            return Handoff.HANDED
        if self.gone:
            return Handoff.FAILED if self.lost else Handoff.CALLER_GONE
        for leg in list(self._legs.values()):
            await self._end_leg(leg)
        try:
            await self._enter_fallback()
        except CallLost as exc:
            log.error("call=%s could not reach the dialplan fallback: %s", self.id, exc)
            self.close()
            return Handoff.FAILED
        except CallerHangup:
            self.close()
            return Handoff.CALLER_GONE
        except TelephonyError as exc:
            if isinstance(exc, AriConnectionError) and await self._continued_anyway():
                # No answer to the request, but Asterisk carried it out (review: the caller,
                # ringing the secretariat in the dialplan, was hung up from here).
                log.warning("call=%s in the dialplan fallback despite: %s", self.id, exc)
                return Handoff.HANDED
            log.error("call=%s could not reach the dialplan fallback: %s", self.id, exc)
            self.left = False
            try:
                await self.hangup()
            except TelephonyError as gone:  # the PBX itself is gone (a dead node): so is the call
                log.warning("call=%s not hung up either: %s", self.id, gone)
                self.close()
            return Handoff.FAILED
        return Handoff.HANDED

    async def _enter_fallback(self) -> None:
        label = self._fallback_label
        if label is not None:
            if self.gone:
                raise self._hung_up()
            await self._quiet(self._chan)
            self.left = True
            with contextlib.suppress(AriNotFound):  # the label, or the caller, is missing
                # A shed call's one request goes aside of the websocket's queue, which an
                # overload lengthens: its caller is answered by the dialplan at once.
                await self.client.continue_in_dialplan(
                    self.id, self._fallback_context, "s", label=label, aside=True
                )
                return
        await self.continue_to(self._fallback_context)  # CallerHangup if the caller left
        if label is not None:  # the channel was there: the dialplan is older than the daemon
            self.fallback_label_missing = True  # the call service says so, and stops asking

    async def _continued_anyway(self) -> bool:
        """After a continue request that got no answer: did the caller leave our app for
        the dialplan all the same?  Its StasisEnd says so; else Asterisk is asked (the
        events may be lost with the socket): a channel now in the fallback's context is
        there.  Unknown (Asterisk still silent): not known to be, so False."""
        if self._left_app:
            return True
        try:
            channel = await self.client.get_channel(self.id)
        except AriError:
            return False
        return str((channel.get("dialplan") or {}).get("context", "")) == self._fallback_context

    async def continue_to(self, context: str, extension: str = "s") -> None:
        """Hand the caller back to the dialplan (fallback when the daemon cannot go on)."""
        # Asterisk queues every request behind a running prompt: end it first.
        await self._quiet(self._chan)
        self.left = True
        await self._caller_op(self.client.continue_in_dialplan(self.id, context, extension, 1))

    async def set_variable(self, name: str, value: str) -> None:
        await self._quiet(self._chan)
        await self._caller_op(self.client.set_variable(self.id, name, value))

    @property
    def detached(self) -> bool:
        return self._detached.is_set()

    def detach(self) -> None:
        """The daemon stops during a conversation: the dial returns as answered and the
        call ends in the log as reached, leaving the bridge, the caller and the callee to
        talk on in Asterisk (the next start watches the bridge: ``BridgeWatch``).  Nothing
        is hung up from here on."""
        self._detached.set()

    async def hangup(self) -> None:
        if self.detached:
            self.close()
            return
        for leg in list(self._legs.values()):
            await self._end_leg(leg)
        if not self.gone and not self.left:
            self._hanging_up = True
            with contextlib.suppress(AriNotFound):
                await self.client.hangup(self.id)
        self.close()

    def go_first(self) -> None:
        go_first()  # this task's (the call's) requests skip the client's queue

    def close(self) -> None:
        """Forget every channel of this call (the router stops sending its events)."""
        for leg in list(self._legs.values()):
            self._drop_leg(leg)
        self.registry.unregister(self.id)
