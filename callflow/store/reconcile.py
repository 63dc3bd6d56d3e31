"""What happened to the calls a crash of the daemon left open: the rules, as a pure function.

A call is *open* when the call log has its start and no end: the daemon was killed while
the call ran.  At the restart, each open call is closed from what Asterisk knows:

* its channel still lives: not decided yet.  The call service found it stranded and
  rescues it (its own end is logged then), or a conversation goes on; looked at again later.
* someone of the practice had taken the call before the crash (the call log says who):
  the call ends as it was reached (``answered``, ``forwarded``...); a conversation cut by
  the crash is not a missed call.
* its CDR says the dialplan fallback took it: ``recovered``, with what the dialplan did.
* its CDR says it ended (the caller hung up, or Asterisk, or a peer) while nobody was
  reached: ``lost``, a technical failure: a caller who hung up did so in the silence of a
  dead daemon, not as a caller who leaves a working line (``abandoned``).
* no CDR ``settle`` seconds after the channel was seen gone (Asterisk restarted, or keeps
  no CDRs): ``lost``.

Every open call gets exactly one closing, once its channel is gone; none is closed twice
(the caller writes a closing only to a call still open).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..flow.events import OutcomeKind
from .cdr import CdrCall


@dataclass(frozen=True)
class OpenCall:
    """A call the log holds without an end."""

    id: str
    started: datetime
    step: str | None = None  # the last step recorded
    answered: datetime | None = None
    reached: OutcomeKind | None = None  # how the flow had reached someone, if it had
    destination: str | None = None  # who was reached


@dataclass(frozen=True)
class Closing:
    """How an open call ends."""

    call_id: str
    outcome: OutcomeKind
    ended: datetime
    detail: str
    answered: datetime | None = None
    destination: str | None = None
    step: str | None = None


def reconcile(
    calls: Iterable[OpenCall],
    alive: Collection[str],
    cdrs: Mapping[str, CdrCall],
    gone_since: Mapping[str, datetime],
    now: datetime,
    settle: float,
) -> list[Closing]:
    """The closings decided now (see the module's rules).  ``alive``: the channel ids
    Asterisk has now; ``gone_since``: when each call's channel was first seen gone."""
    out: list[Closing] = []
    for call in calls:
        if call.id in alive:
            continue
        cdr = cdrs.get(call.id)
        if cdr is None:
            since = gone_since.get(call.id)
            if since is None or now - since < timedelta(seconds=settle):
                continue  # its CDR may be on its way
            out.append(_without_cdr(call, since))
            continue
        out.append(_from_cdr(call, cdr))
    return out


def _reached(call: OpenCall, ended: datetime, how: str) -> Closing:
    assert call.reached is not None
    return Closing(
        call.id,
        call.reached,
        ended,
        f"reached before the daemon went away; {how}",
        answered=call.answered,
        destination=call.destination,
        step=call.step,
    )


def _without_cdr(call: OpenCall, since: datetime) -> Closing:
    if call.reached is not None:
        return _reached(call, since, "closed at the restart (no CDR)")
    return Closing(
        call.id,
        OutcomeKind.LOST,
        since,
        "left open by a crash of the daemon; gone at the restart, and Asterisk has no record of it",
        step=call.step,
    )


def _from_cdr(call: OpenCall, cdr: CdrCall) -> Closing:
    if call.reached is not None:
        return _reached(call, cdr.end, f"closed from Asterisk's CDR ({cdr.disposition})")
    if cdr.went_to_fallback:
        return Closing(
            call.id,
            OutcomeKind.RECOVERED,
            cdr.end,
            f"left open by a crash of the daemon; {cdr.fallback_detail()}",
            answered=cdr.answer if cdr.disposition == "ANSWERED" else None,
            step=call.step,
        )
    if cdr.hangup_by == "caller":
        # Not "abandoned": the caller hung up in the silence of a dead daemon (review: the
        # crash's cost was logged as the callers' doing, and left out of the failures).
        return Closing(
            call.id,
            OutcomeKind.LOST,
            cdr.end,
            "left open by a crash of the daemon; the caller hung up before anyone was reached",
            step=call.step,
        )
    by = {"peer": "a peer", "pbx": "Asterisk"}.get(cdr.hangup_by, "Asterisk (or a peer)")
    return Closing(
        call.id,
        OutcomeKind.LOST,
        cdr.end,
        f"left open by a crash of the daemon; ended by {by} before anyone was reached",
        step=call.step,
    )


def retired(call: OpenCall, node: str, by: str, now: datetime) -> Closing:
    """An open call of a node an administrator retired (gone for good, with its Asterisk
    and its daemon): nobody is left to say how the call ended."""
    how = f"closed by {by}: node {node} retired with the call open"
    if call.reached is not None:
        return _reached(call, now, how)
    return Closing(
        call.id, OutcomeKind.LOST, now, f"{how}; how it ended is unknown", step=call.step
    )


__all__ = ["Closing", "OpenCall", "reconcile", "retired"]
