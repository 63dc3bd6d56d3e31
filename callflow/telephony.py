"""The Call protocol: everything the flow engine may ask of a live call.

The engine speaks only this protocol; the simulator, ARI and FastAGI each implement
it.  Every method raises ``CallerHangup`` when the caller hangs up in the middle of it and
``TelephonyError`` when the PBX fails to carry it out, so each step can end cleanly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


def mailbox_probe(box: str) -> str:
    """The dialplan function that says "1" when Asterisk's voicemail has mailbox ``box``
    ("200" or "200@context", as the flow schema checks it); it fails when no voicemail
    module runs.  It does not see a ``VoiceMail()`` unregistered by a variant that
    declined beside app_voicemail.so (functions are unregistered by pointer, applications
    by name): that is ``VoicemailProblem``'s to tell."""
    return f"VM_INFO({box},exists)"


#: Where a voicemail step hands the caller over, and the hangup handler that writes into
#: the call's CDR whether a message was left (asterisk-conf/callflow/extensions_callflow.conf).
#: The driver pushes the handler before the hand-over: a caller who hangs up on the way
#: is then recorded too (the context pushes it again: both runs write the same).
VOICEMAIL_CONTEXT = "callflow-voicemail"
VOICEMAIL_STATUS_HANDLER = "callflow-voicemail-status,s,1"
PUSH_HANGUP_HANDLER = "CHANNEL(hangup_handler_push)"


#: Why Asterisk's voicemail cannot take a caller now, with the fix; None: it can, or it
#: is not known yet.  Read from Asterisk's module list at each connection
#: (``callflow.ari.pbxmodules``); the engine asks it before any driver's ``voicemail``
#: (``Services.voicemail_problem``), whichever driver carries the call.
VoicemailProblem = Callable[[], str | None]


def no_problem() -> str | None:
    return None


def voicemail_refused(call_id: str, box: str, why: str) -> str:
    """The log line of a voicemail step that keeps its caller rather than hand them to a
    voicemail that would hang up on them."""
    return f"call={call_id}: voicemail box {box}: {why}: the step's 'failed' branch is taken"


class Driver(StrEnum):
    """How the call reaches the engine: the same flows run behind each, one log for all."""

    ARI = "ari"  # a Stasis application (callflow/ari)
    AGI = "agi"  # FastAGI: AGI(agi://host/FLOW) in the dialplan (callflow/agi)
    SIMULATOR = "simulator"  # ``callflow simulate`` and tests


class DialStatus(StrEnum):
    """Result of ringing one target, with Asterisk's DIALSTATUS vocabulary."""

    ANSWER = "ANSWER"  # answered (and, for a confirmed leg, accepted) and bridged
    BUSY = "BUSY"  # the far end is busy: not the trunk's fault
    NOANSWER = "NOANSWER"  # rang out: not the trunk's fault
    DECLINED = "DECLINED"  # a confirmed leg answered but did not press the confirm digit
    CHANUNAVAIL = "CHANUNAVAIL"  # the endpoint or trunk is unreachable
    CONGESTION = "CONGESTION"  # the trunk refused the call (e.g. SIP 503)
    FAILED = "FAILED"  # anything else the PBX reported

    @property
    def trunk_fault(self) -> bool:
        """True when the failure says the trunk (not the callee) is at fault."""
        return self in (DialStatus.CHANUNAVAIL, DialStatus.CONGESTION, DialStatus.FAILED)


class Handoff(StrEnum):
    """How handing a call to the PBX's last resort (the dialplan fallback) went."""

    HANDED = "handed"  # the caller is in the fallback
    CALLER_GONE = "caller gone"  # the caller hung up first: nobody to hand over
    FAILED = "failed"  # the PBX could not take it (the caller was hung up, or lost)


@dataclass(frozen=True)
class DialResult:
    status: DialStatus
    # Seconds from the start of ringing to answer (None when not answered).
    answer_delay: float | None = None
    # An answered call whose conversation the caller ended (hung up first): nothing of the
    # flow follows it.  False when the callee hung up and the caller is still there.
    caller_hung_up: bool = False
    # The daemon stopped during the conversation and left it to go on in the PBX: nothing
    # of the flow follows it (implies ``caller_hung_up``'s "no next step").
    detached: bool = False


class Call(Protocol):
    """One inbound call, as the engine sees it."""

    @property
    def id(self) -> str: ...

    @property
    def caller(self) -> str:
        """Caller ID number as received (may be empty, 'anonymous', or junk)."""
        ...

    @property
    def dialed(self) -> str: ...

    @property
    def driver(self) -> Driver:
        """The driver carrying the call: recorded with the call, a label of its metrics."""
        ...

    async def answer(self) -> None: ...

    async def play(self, prompts: Sequence[str], *, barge_in: bool = False) -> str:
        """Play sound files in turn; with ``barge_in`` a key stops playback and is returned.

        Returns the key pressed ('' when none).
        """
        ...

    async def collect(
        self,
        prompt: str | None,
        *,
        max_digits: int,
        first_timeout: float,
        inter_timeout: float,
        barge_in: bool = True,
    ) -> str:
        """Play ``prompt`` (keys interrupt it when ``barge_in``) then collect up to
        ``max_digits`` DTMF digits.  Returns '' when nothing was pressed in time."""
        ...

    async def dial(
        self,
        target: str,
        *,
        timeout: float,
        caller_id: str | None = None,
        setup_timeout: float | None = None,
        while_ringing: Sequence[str] = (),
    ) -> DialResult:
        """Ring ``target`` (an Asterisk dial string such as ``PJSIP/accueil`` or
        ``PJSIP/0180000000@trunk-a``) for at most ``timeout`` s and bridge it on answer.
        With ``setup_timeout``, a target that shows no sign of life (no ringing, no
        progress) within that time is given up as ``CHANUNAVAIL``: a trunk that does not
        answer must not keep the caller waiting.  ``while_ringing`` sounds are played to
        the caller while the target rings (instead of hold music), so a message never
        delays the call (tier 1).  Returns when the bridged call ends or ringing failed."""
        ...

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
        """Ring ``target``; when it answers play it ``announce`` and bridge only if the
        callee presses ``confirm`` within ``confirm_timeout`` s (else ``DECLINED``)."""
        ...

    async def voicemail(self, box: str) -> bool:
        """Hand the caller to voicemail box ``box``: True once handed over (whether a
        message is then left, the call's CDR says); False, the caller kept, when Asterisk
        has no such mailbox or no voicemail at all (``mailbox_probe``)."""
        ...

    async def set_variable(self, name: str, value: str) -> None: ...

    async def last_resort(self) -> Handoff:
        """The flow reached nobody: hand the call to the PBX's own last-resort path (the
        dialplan fallback), or hang up where there is none; how it went.  Never raises."""
        ...

    async def hangup(self) -> None: ...

    def go_first(self) -> None:
        """The call reached an emergency tier: from now on its requests to the PBX go
        before those of other calls (called from the call's own task)."""
        ...
