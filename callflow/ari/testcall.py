"""A drill's test call over ARI: originate to the destination over one trunk, wait for the
answer within the ring time, hang up at once.

The channel enters our Stasis application on answer (``appArgs`` ``leg,drill``: were it to
arrive after we gave up, the call service hangs it up as an orphan leg, never runs a flow
on it).  Its events reach us through the event router's ``ChannelRegistry``.  An emergency
number is refused here too, before any request: the drill's planner already never asks,
and this adapter would not obey if it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import ClassVar

from ..drills import EmergencyNumberRefused, TestCall, is_emergency_number
from ..telephony import DialStatus
from .call import LEG_ROLE_VAR, leg_status
from .channels import ChannelRegistry, Event
from .client import AriClient
from .faults import AriConnectionError, AriError

log = logging.getLogger("callflow.ari.testcall")

DRILL_ARG = "drill"  # the second appArg of a test call's channel
_SIGN_OF_LIFE = ("Ringing", "Ring", "Up")


class TestCallWatch:
    """The events of one test channel: answered, or gone (with why)."""

    __test__ = False  # not a pytest class, whatever its name

    #: What it reacts to (the call service's event filter lets these through).
    EVENTS: ClassVar[frozenset[str]] = frozenset(
        {"StasisStart", "ChannelStateChange", "Dial"}  # answered, or a dial status
        | {"ChannelDestroyed", "ChannelHangupRequest", "StasisEnd"}  # gone
    )

    def __init__(self) -> None:
        self.answered = asyncio.Event()
        self.gone = asyncio.Event()
        self.settled = asyncio.Event()  # answered or gone
        self.dialstatus: str | None = None
        self.cause: int | None = None

    def on_event(self, event: Event) -> None:
        kind = event.get("type")
        if kind not in self.EVENTS:
            return
        if kind == "StasisStart" or (
            kind == "ChannelStateChange" and (event.get("channel") or {}).get("state") == "Up"
        ):
            self.answered.set()
            self.settled.set()
        elif kind in ("ChannelDestroyed", "ChannelHangupRequest", "StasisEnd"):
            cause = event.get("cause")
            if isinstance(cause, int) and self.cause is None:
                self.cause = cause
            self.gone.set()
            self.settled.set()
        elif kind == "Dial" and isinstance(event.get("dialstatus"), str):
            self.dialstatus = str(event["dialstatus"]) or self.dialstatus


def _number_of(endpoint: str) -> str:
    """``PJSIP/0180000000@trunk-a`` → ``0180000000``."""
    tech_and_number = endpoint.partition("@")[0]
    return tech_and_number.rpartition("/")[2]


class AriTestCaller:
    """``drills.TestCaller`` over ARI."""

    def __init__(self, client: AriClient, registry: ChannelRegistry) -> None:
        self.client = client
        self.registry = registry

    async def call(self, endpoint: str, ring: float, caller_id: str | None) -> TestCall:
        if is_emergency_number(_number_of(endpoint)):
            raise EmergencyNumberRefused(f"no test call to an emergency number ({endpoint})")
        loop = asyncio.get_running_loop()
        chan_id = f"drill-{uuid.uuid4()}"
        watch = TestCallWatch()
        self.registry.register(chan_id, watch)
        started = loop.time()
        try:
            try:
                await self.client.originate(
                    endpoint,
                    app_args=f"leg,{DRILL_ARG}",
                    channel_id=chan_id,
                    timeout=int(ring) + 5,  # Asterisk's limit is a safety net; ours is first
                    caller_id=caller_id,
                    # a leg to recovery: one stranded by a restart is hung up, never run as a call
                    variables={LEG_ROLE_VAR: "leg"},
                )
            except AriConnectionError as exc:
                # The request may or may not have been carried out: a channel may ring
                # under our id, so the finally below hangs it up (a 404 if there is none).
                return TestCall(DialStatus.CHANUNAVAIL, detail=f"no answer from the PBX: {exc}")
            except AriError as exc:
                watch.gone.set()  # refused: no channel, nothing to hang up
                return TestCall(DialStatus.CHANUNAVAIL, detail=f"the PBX refused: {exc}")
            try:
                async with asyncio.timeout(ring):
                    await watch.settled.wait()
            except TimeoutError:
                return TestCall(DialStatus.NOANSWER)
            if watch.answered.is_set():
                return TestCall(DialStatus.ANSWER, answer_delay=loop.time() - started)
            status = leg_status(watch.dialstatus, watch.cause)
            cause = "" if watch.cause is None else f"cause {watch.cause}"
            return TestCall(status, detail=cause)
        finally:
            # Hung up at once: a drill never holds the secretariat's line.
            if not watch.gone.is_set():
                with contextlib.suppress(AriError):
                    await self.client.hangup(chan_id)
            self.registry.unregister(chan_id)
