"""The ``Call`` protocol carried out over FastAGI.

An ``AgiCall`` sends one AGI command at a time on the call's own connection: prompts are
``STREAM FILE`` (barge-in: the keys as escape digits), a menu is ``GET OPTION`` then ``WAIT
FOR DIGIT``, a destination is ``EXEC Dial``.  Asterisk's ``Dial`` rings and bridges, so a
caller who hangs up ends every leg by itself; the statuses it leaves in ``DIALSTATUS`` are
the ``DialStatus`` vocabulary, so the engine's trunk failover works unchanged.  An on-call
person confirms in a ``U()`` subroutine of the dialplan (``callflow-confirm``) that tells
the caller's channel the answer through ``MASTER_CHANNEL(CALLFLOW_CONFIRM)``.

Handing the caller to the dialplan (fallback, voicemail) sets the channel's next context
and ends the session: ``AGI()`` returns there.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence

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
from .protocol import AgiClosed, AgiDead, AgiError, AgiReply, AgiRequest, AgiSession, quote

log = logging.getLogger("callflow.agi.call")

KEYS = "0123456789*#"
VOICEMAIL_BOX_VAR = "CALLFLOW_VOICEMAIL_BOX"  # the same variable as over ARI
CONFIRM_VAR = "CALLFLOW_CONFIRM"  # set by the confirm subroutine: accepted | declined
# Set while Dial runs: if the daemon stops then, the dialplan after AGI() ends a
# conversation that took place instead of sending the caller to the fallback.
DIALING_VAR = "CALLFLOW_DIALING"

# Dial targets and sound names go inside Dial's and Gosub's own argument syntax, where
# ',', '^', '(', ')', '&' or '|' would be read as separators: only plain names pass.
_TARGET = re.compile(r"^[A-Za-z0-9_@/.+#*:-]{1,200}$")
_SOUND = re.compile(r"^[A-Za-z0-9_/.:-]{1,200}$")
_CONTEXT = re.compile(r"^[A-Za-z0-9_-]{1,80}$")

_DIALSTATUS = {s.value: s for s in DialStatus}


def dial_status(value: str) -> DialStatus | None:
    """``DIALSTATUS`` as a ``DialStatus``; None for CANCEL (the caller hung up)."""
    if value == "CANCEL":
        return None
    return _DIALSTATUS.get(value, DialStatus.FAILED)


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise TelephonyError(f"refused {what} {value[:30]!r} for AGI: unexpected characters")
    return value


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class AgiCall:
    def __init__(
        self,
        session: AgiSession,
        request: AgiRequest,
        *,
        dialed: str,
        call_id: str,
        play_timeout: float = 600.0,
        max_call: float = 4 * 3600.0,
        fallback_context: str = "callflow-fallback",
        voicemail_context: str = VOICEMAIL_CONTEXT,
        confirm_context: str = "callflow-confirm",
    ) -> None:
        self.session = session
        self.request = request
        self._id = call_id
        self._caller = request.caller
        self._dialed = dialed
        self.play_timeout = play_timeout  # the longest prompt
        self.max_call = max_call  # the longest conversation Dial may hold us
        self._fallback = _checked(fallback_context, _CONTEXT, "context")
        self._voicemail = _checked(voicemail_context, _CONTEXT, "context")
        self._confirm = _checked(confirm_context, _CONTEXT, "context")
        self.answered = False
        self.bridged = False  # inside Dial: a conversation may be under way
        self.left = False  # handed back to the dialplan: not ours to hang up

    # -- identity ------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def caller(self) -> str:
        return self._caller

    @property
    def dialed(self) -> str:
        return self._dialed

    @property
    def driver(self) -> Driver:
        return Driver.AGI

    @property
    def gone(self) -> bool:
        return self.session.hung_up

    # -- commands ------------------------------------------------------------------------

    async def _cmd(
        self, line: str, timeout: float | None = None, *, dead_ok: bool = False
    ) -> AgiReply:
        """One command; the caller's hangup and a lost connection become the engine's
        ``CallerHangup`` / ``CallLost``, any other failure a ``TelephonyError``.
        ``dead_ok``: a command Asterisk still carries out on a hung-up channel (variables:
        what a Dial ended with, when the caller hung up during the conversation)."""
        if self.session.hung_up and not dead_ok:
            raise CallerHangup(f"caller hung up ({self.id})")
        try:
            return await self.session.command(line, timeout=timeout)
        except AgiDead:
            raise CallerHangup(f"caller hung up ({self.id})") from None
        except AgiClosed as exc:
            if self.session.hung_up:
                raise CallerHangup(f"caller hung up ({self.id})") from None
            raise CallLost(f"AGI connection of {self.id} lost: {exc}") from None

    async def _alive(self) -> None:
        """After a ``result=-1``: was it the caller hanging up (raises) or a failure?"""
        await self._cmd("CHANNEL STATUS")

    async def get_variable(self, name: str) -> str:
        reply = await self._cmd(f"GET VARIABLE {quote(name)}", dead_ok=True)
        return reply.data if reply.result == 1 else ""

    async def set_variable(self, name: str, value: str) -> None:
        await self._cmd(f"SET VARIABLE {quote(name)} {quote(value)}", dead_ok=True)

    # -- the Call protocol ---------------------------------------------------------------

    async def answer(self) -> None:
        if self.answered:
            return
        if (await self._cmd("ANSWER")).result != 0:
            await self._alive()
            raise TelephonyError(f"call {self.id} could not be answered")
        self.answered = True

    async def _stream(self, prompt: str, keys: str) -> str:
        """Play one sound; the key that stopped it ('' when none)."""
        name = _checked(prompt, _SOUND, "sound")
        reply = await self._cmd(f"STREAM FILE {quote(name)} {quote(keys)}", self.play_timeout)
        if reply.result < 0:
            await self._alive()  # raises when the caller hung up
            log.warning("call=%s sound %r could not be played", self.id, prompt)
            return ""
        return reply.digit

    async def play(self, prompts: Sequence[str], *, barge_in: bool = False) -> str:
        for prompt in prompts:
            key = await self._stream(prompt, KEYS if barge_in else "")
            if key:
                return key
        return ""

    async def _wait_digit(self, seconds: float) -> str:
        reply = await self._cmd(
            f"WAIT FOR DIGIT {_ms(seconds)}", seconds + self.session.command_timeout
        )
        if reply.result < 0:
            await self._alive()
            raise TelephonyError(f"call {self.id}: WAIT FOR DIGIT failed")
        return reply.digit

    async def collect(
        self,
        prompt: str | None,
        *,
        max_digits: int,
        first_timeout: float,
        inter_timeout: float,
        barge_in: bool = True,
    ) -> str:
        # Keys pressed before the question never reach us: AGI reads DTMF only inside a
        # command, and a prompt without barge-in swallows them.
        digits = ""
        if prompt and barge_in:
            name = _checked(prompt, _SOUND, "sound")
            reply = await self._cmd(
                f"GET OPTION {quote(name)} {quote(KEYS)} {_ms(first_timeout)}",
                self.play_timeout + first_timeout,
            )
            if reply.result < 0:
                await self._alive()
                log.warning("call=%s sound %r could not be played", self.id, prompt)
                digits = await self._wait_digit(first_timeout)
            else:
                digits = reply.digit
            if not digits:
                return ""
        elif prompt:
            await self._stream(prompt, "")
        while len(digits) < max_digits:
            key = await self._wait_digit(first_timeout if not digits else inter_timeout)
            if not key:
                break
            if key == "#" and digits and max_digits > 1:
                break  # '#' ends a multi-digit entry
            digits += key
        return digits

    async def dial(
        self,
        target: str,
        *,
        timeout: float,
        caller_id: str | None = None,
        setup_timeout: float | None = None,
        while_ringing: Sequence[str] = (),
    ) -> DialResult:
        # Dial cannot play a message while it rings, nor give up on a target that shows no
        # sign of life before ``timeout``: ``setup_timeout`` and ``while_ringing`` are
        # ARI's alone (README, "FastAGI").  A refused or failing trunk still fails over.
        options = ""
        if caller_id:
            options += f"f({_checked(caller_id, _TARGET, 'caller id')})"
        return await self._dial(target, timeout, options, confirming=False)

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
        key = _checked(confirm, re.compile(r"^[0-9*#]$"), "confirm key")
        sounds = "&".join(_checked(a, _SOUND, "sound") for a in announce)
        args = f"{key}^{sounds}^{confirm_timeout:g}"
        await self.set_variable(CONFIRM_VAR, "")
        return await self._dial(target, timeout, f"U({self._confirm}^{args})", confirming=True)

    async def _dial(
        self, target: str, timeout: float, options: str, *, confirming: bool
    ) -> DialResult:
        target = _checked(target, _TARGET, "dial target")
        # g: come back to us when the callee hangs up; m: music on hold for an answered
        # caller while it rings (ringback otherwise), as over ARI.
        options = "g" + ("m" if self.answered else "") + options
        ring = max(1, round(timeout))
        await self.set_variable(DIALING_VAR, "1")
        self.bridged = True
        try:
            reply = await self._cmd(
                f"EXEC Dial {quote(f'{target},{ring},{options}')}", timeout + self.max_call
            )
        finally:
            self.bridged = False
        status_text = await self.get_variable("DIALSTATUS")
        await self.set_variable(DIALING_VAR, "")
        status = dial_status(status_text)
        if status is None:
            raise CallerHangup(f"caller hung up while {target} rang ({self.id})")
        if reply.result < 0 and status is not DialStatus.ANSWER:
            await self._alive()
        declined = confirming and await self.get_variable(CONFIRM_VAR) != "accepted"
        if status is DialStatus.ANSWER and declined:
            return DialResult(DialStatus.DECLINED)
        if status is not DialStatus.ANSWER:
            return DialResult(status)
        self.answered = True  # Dial answered the caller to bridge the call
        # With ``g`` Dial returns 0 when the callee hangs up (the caller stays with us, and
        # the flow may go on: a survey) and -1 when the caller does.
        caller_left = reply.result < 0 or self.session.hung_up
        return DialResult(DialStatus.ANSWER, await self._ring_time(), caller_hung_up=caller_left)

    async def _ring_time(self) -> float | None:
        """Seconds from the start of ringing to the answer: Dial's DIALEDTIME (its whole
        run) minus ANSWEREDTIME (the conversation), in ms where Asterisk has them."""
        for suffix, scale in (("_MS", 1000.0), ("", 1.0)):
            dialed = await self.get_variable(f"DIALEDTIME{suffix}")
            talked = await self.get_variable(f"ANSWEREDTIME{suffix}")
            try:
                return max(0.0, (int(dialed) - int(talked)) / scale)
            except ValueError:
                continue
        return None

    async def voicemail(self, box: str) -> bool:
        # As over ARI, the dialplan's voicemail context takes the caller, once Asterisk
        # says it has the mailbox (a function that fails reads as "").
        if await self.get_variable(mailbox_probe(box)) != "1":
            why = "not in Asterisk's voicemail.conf, or no voicemail module runs"
            log.error(voicemail_refused(self.id, box, why))
            return False
        await self.set_variable(VOICEMAIL_BOX_VAR, box)
        await self.set_variable(PUSH_HANGUP_HANDLER, VOICEMAIL_STATUS_HANDLER)
        await self.continue_to(self._voicemail)
        return True

    async def continue_to(self, context: str, extension: str = "s") -> None:
        """Hand the caller to the dialplan: AGI() returns into ``context``."""
        context = _checked(context, _CONTEXT, "context")
        extension = _checked(extension, _CONTEXT, "extension")
        await self._cmd(f"SET CONTEXT {quote(context)}")
        await self._cmd(f"SET EXTENSION {quote(extension)}")
        await self._cmd("SET PRIORITY 1")
        self.left = True

    async def last_resort(self) -> Handoff:
        """Nobody could be reached: the dialplan fallback rings the secretariat, the
        outside secretariat and voicemail on its own."""
        if self.left and not self.gone:
            return Handoff.HANDED
        if self.gone or self.session.closed:
            # Gone with its connection: the caller, or Asterisk with them (not told apart).
            return Handoff.CALLER_GONE if self.gone else Handoff.FAILED
        try:
            await self.continue_to(self._fallback)
        except CallerHangup:
            return Handoff.CALLER_GONE
        except (TelephonyError, AgiError) as exc:
            log.error("call=%s could not reach the dialplan fallback: %s", self.id, exc)
            self.left = False
            await self.hangup()
            return Handoff.FAILED
        return Handoff.HANDED

    async def hangup(self) -> None:
        if self.gone or self.left or self.session.closed:
            return
        with contextlib.suppress(CallerHangup):
            await self._cmd("HANGUP")

    def go_first(self) -> None:
        """Nothing to reorder: each AGI call has its own connection, and its commands
        wait behind no other call's (over ARI they share the client's queue)."""
