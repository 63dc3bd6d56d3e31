"""Asterisk's own call records (CDRs), as ``asterisk-conf/callflow/cdr_custom_callflow.conf``
writes them: one JSON object a line in ``/var/log/asterisk/cdr-custom/callflow-cdr.json``.

Asterisk writes several CDRs for one call (one per destination the dialplan rang), all
with the caller's channel ``uniqueid`` (the daemon's call id, when the daemon saw the
call).  ``CdrCall`` merges them into what the call log needs: when, who, what was dialled,
what the dialplan fallback did (``callflow_fallback``, set by the dialplan), who hung up
(``callflow_hangup``: caller, peer or pbx, set by its hangup handler) and, for a call that
reached a voicemail, whether a message was left (``callflow_voicemail``: ``VoiceMail()``'s
status, set by a hangup handler of its own).  ``fallback_fate`` reads these into where the
fallback left the call (``FallbackFate``).

``CdrFile`` reads the lines appended since the last read (the file is only ever appended
to; a file rotated or truncated is read again from its start: the import is keyed by
``uniqueid``, so reading a line twice imports nothing twice).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from ..telephony import VOICEMAIL_CONTEXT

log = logging.getLogger("callflow.store")

HANGUP_BY = frozenset({"caller", "peer", "pbx"})


class FallbackFate(StrEnum):
    """Where the dialplan fallback (``[callflow-fallback]``) left a call."""

    SECRETARIAT = "secretariat"  # the practice's secretariat answered
    OUTSIDE = "outside"  # the outside telephone secretariat answered
    # A message was left in the voicemail (or, from a dialplan of before the voicemail's
    # status was recorded, the caller hung up in the voicemail: a message or not).
    VOICEMAIL = "voicemail"
    NOBODY = "nobody"  # rung out, and no message left: the caller heard goodbye, or left
    ABANDONED = "abandoned"  # the caller hung up while held or rung, before any answer
    CUT = "cut"  # ended by the PBX (stopped, or an operator) before any answer


#: The stages ``[callflow-fallback]`` writes, in its order; a stage that rings people.
_STAGES = frozenset({"shed", "secretariat", "outside", "voicemail"})
_RINGING = {"secretariat": FallbackFate.SECRETARIAT, "outside": FallbackFate.OUTSIDE}

#: ``callflow_voicemail``: ``VoiceMail()``'s ``VMSTATUS``, written by the hangup handler
#: ``[callflow-voicemail-status]`` of a call that reached a voicemail; ``NONE`` when it
#: ended before ``VoiceMail()`` set one (a caller who hung up before the greeting).
#: Asterisk 22 sets ``SUCCESS`` only for a message kept: also one the caller ended by
#: hanging up, the usual way; ``FAILED`` for a hangup during the greeting or a message
#: shorter than the mailbox's ``minsecs``; ``USEREXIT`` for a key that left it.  With
#: ``minsecs = 0`` (voicemail.conf's default) a caller who hangs up at the beep leaves an
#: empty message, in the mailbox with their number: ``SUCCESS``, a callback to make.
MESSAGE_LEFT = "SUCCESS"


def _stages(trace: str) -> tuple[list[tuple[str, str, str]], str]:
    """The trace's stages, each (name, "=" or "", status), and its ``Dial()`` status."""
    stages = trace.split()
    dial = ""
    if stages and stages[-1].startswith("dial="):
        dial = stages.pop()[len("dial=") :]
    return [stage.partition("=") for stage in stages], dial


def fallback_fate(trace: str, hangup_by: str, voicemail: str = "") -> FallbackFate | None:
    """Where the fallback left a call, from its trace (``callflow_fallback``: the stage it
    is at, after the ones it went through, each with its status once it had one, then the
    status of its last ``Dial()``, e.g. ``secretariat=NOANSWER outside dial=ANSWER``; a shed
    call's ``shed`` gives way to ``secretariat`` once that rings), who hung up, and the
    voicemail's status (``callflow_voicemail``, "" from a dialplan that does not write it).

    None: no trace, one this daemon's dialplan does not write (a context of the site's
    own), or one that cannot tell: a call that ended while a stage rang, with no ``Dial()``
    status (the hangup handler of before this release wrote none, so a CDR of then, or of
    an Asterisk whose dialplan was not reloaded, may be a conversation or a caller who
    gave up)."""
    parts, dial = _stages(trace)
    if not parts or any(name not in _STAGES for name, _, _ in parts):
        return None
    for name, _, status in parts:
        if status == "ANSWER" and name in _RINGING:
            return _RINGING[name]
    name, eq, status = parts[-1]
    if name == "voicemail":
        if voicemail:  # the voicemail's own word: a message kept, or none
            return FallbackFate.VOICEMAIL if voicemail == MESSAGE_LEFT else FallbackFate.NOBODY
        if status == MESSAGE_LEFT or (not eq and hangup_by == "caller"):
            return FallbackFate.VOICEMAIL
        if eq:
            return FallbackFate.NOBODY
    elif eq:
        return FallbackFate.NOBODY  # a stage over without an answer, and nothing after it
    # The call ended during this stage.  A conversation ends inside Dial(), before the
    # fallback writes the stage's status: only the Dial()'s own status says it answered.
    if name in _RINGING:
        if not dial:
            return None  # an older handler's trace: answered or not, nothing says
        if dial == "ANSWER":
            return _RINGING[name]
    return FallbackFate.ABANDONED if hangup_by == "caller" else FallbackFate.CUT


def older_handler(trace: str) -> bool:
    """Whether ``trace`` was written by a hangup handler older than this daemon's: one
    that ended while a stage rang, with no ``Dial()`` status (see ``fallback_fate``)."""
    parts, dial = _stages(trace)
    return bool(parts) and not dial and parts[-1][0] in _RINGING and not parts[-1][1]


@dataclass(frozen=True)
class CdrCall:
    """One call as Asterisk recorded it (its CDRs merged)."""

    uniqueid: str  # the caller's channel: the daemon's call id
    linkedid: str
    start: datetime
    end: datetime
    answer: datetime | None = None  # the first time someone answered
    caller: str = ""
    dialed: str = ""
    fallback: str = ""  # what the dialplan fallback did, e.g. "secretariat=NOANSWER outside"
    hangup_by: str = ""  # caller | peer | pbx ("" when the hangup handler did not run)
    disposition: str = ""  # of the last CDR: ANSWERED, NO ANSWER, BUSY, FAILED...
    entered: bool = False  # came in by the shipped dialplan's entry (callflow_dialed set)
    voicemail: str = ""  # VoiceMail()'s status (see MESSAGE_LEFT); "": no voicemail reached
    context: str = ""  # where in the dialplan it ended (dcontext, of its last CDR)

    def merge(self, later: CdrCall) -> CdrCall:
        """This call with the facts of a later CDR of the same call."""
        answers = [t for t in (self.answer, later.answer) if t is not None]
        return replace(
            self,
            start=min(self.start, later.start),
            end=max(self.end, later.end),
            answer=min(answers) if answers else None,
            caller=self.caller or later.caller,
            dialed=self.dialed or later.dialed,
            fallback=later.fallback or self.fallback,
            hangup_by=later.hangup_by or self.hangup_by,
            disposition=later.disposition or self.disposition,
            entered=self.entered or later.entered,
            voicemail=later.voicemail or self.voicemail,
            context=later.context or self.context,
        )

    @property
    def went_to_fallback(self) -> bool:
        return bool(self.fallback)

    @property
    def fate(self) -> FallbackFate | None:
        """Where the dialplan fallback left this call (None: it did not go there)."""
        return fallback_fate(self.fallback, self.hangup_by, self.voicemail)

    @property
    def older_voicemail_handler(self) -> bool:
        """Whether this call reached a voicemail (a flow's, or the fallback's stage) and no
        handler wrote its status: Asterisk runs an extensions_callflow.conf of before
        ``[callflow-voicemail-status]`` (join.sh keeps a site's files on an upgrade)."""
        if self.voicemail:
            return False
        stages = [name for name, _, _ in _stages(self.fallback)[0]]
        return self.context == VOICEMAIL_CONTEXT or "voicemail" in stages

    @property
    def message_left(self) -> bool | None:
        """Whether the caller left a message in the voicemail it reached (None: it reached
        none, or a dialplan that does not say wrote its CDR)."""
        return None if not self.voicemail else self.voicemail == MESSAGE_LEFT

    @property
    def over(self) -> bool:
        """An incoming call whose hangup handler ran: nothing more will come of it."""
        return self.entered and bool(self.hangup_by)

    def fallback_detail(self) -> str:
        """What the dialplan did, for people: "dialplan fallback: secretariat=NOANSWER …"."""
        what = self.fallback or "-"
        return f"dialplan fallback: {what} ({self.disposition or '?'})"


def _time(value: Any) -> datetime | None:
    """A CDR time (epoch seconds, ``start(double)``); 0 means "never" (no answer)."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(t, UTC) if t > 0 else None


def parse_line(line: str) -> CdrCall | None:
    """One CDR line; None (and a log line) for a line that is not a CDR of ours."""
    try:
        data = json.loads(line)
    except ValueError:
        log.warning("CDR: a line that is not JSON was skipped")
        return None
    if not isinstance(data, dict):
        return None
    uniqueid = str(data.get("uniqueid") or "")
    start, end = _time(data.get("start")), _time(data.get("end"))
    if not uniqueid or start is None:
        return None
    hangup = str(data.get("callflow_hangup") or "")
    dialed = str(data.get("callflow_dialed") or "")
    return CdrCall(
        uniqueid=uniqueid,
        linkedid=str(data.get("linkedid") or uniqueid),
        start=start,
        end=end or start,
        answer=_time(data.get("answer")),
        caller=str(data.get("src") or ""),
        dialed=dialed or str(data.get("dst") or ""),
        fallback=str(data.get("callflow_fallback") or ""),
        hangup_by=hangup if hangup in HANGUP_BY else "",
        disposition=str(data.get("disposition") or ""),
        entered=bool(dialed),
        voicemail=str(data.get("callflow_voicemail") or ""),
        context=str(data.get("dcontext") or ""),
    )


def merge_calls(
    calls: Iterable[CdrCall], into: dict[str, CdrCall] | None = None
) -> dict[str, CdrCall]:
    """CDRs merged by ``uniqueid`` (into ``into`` when given, which is returned)."""
    out = {} if into is None else into
    for c in calls:
        known = out.get(c.uniqueid)
        out[c.uniqueid] = c if known is None else known.merge(c)
    return out


class CdrUnreadable(Exception):
    """The CDR file cannot be read by this process; the message says why, and the fix."""


def _why(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{path}: {exc.strerror}: the daemon's user must be in Asterisk's group "
            "(usermod -a -G asterisk callflow, then restart callflow)"
        )
    return f"{path}: {exc.strerror or exc}"


class CdrFile:
    """Reads a CDR file as it grows (blocking: call ``read_new`` in a worker thread).

    A file the daemon may not read (its user not in Asterisk's group) is no reason to stop
    the rest of the after-crash work: ``read_new`` then says so once, reads nothing, and
    ``problem`` holds why, for the health check, until a read works again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._missing_logged = False
        self.problem: str | None = None  # why the file cannot be read; None: it can
        self._exposure_told: int | None = None  # the inode told world-readable

    def read_new(self) -> list[CdrCall]:
        """The CDRs appended since the last call (every CDR of the file the first time)."""
        try:
            opened = self._open()
            if opened is None:
                self.problem = None  # not written yet (no call since the install): no fault
                if not self._missing_logged:
                    self._missing_logged = True
                    log.warning(
                        "CDR: %s does not exist (yet): see asterisk-conf/README.md", self.path
                    )
                return []
            f, st = opened
            with f:
                data = self._read(f, st)
        except CdrUnreadable as exc:
            self._fail(str(exc))
            return []
        except OSError as exc:  # an I/O error while reading
            self._fail(_why(self.path, exc))
            return []
        self._missing_logged = False
        self._readable_again()
        self._tell_exposure(st)
        complete = data.rfind(b"\n") + 1  # a line being written is read next time
        self._offset += complete
        out: list[CdrCall] = []
        for raw in data[:complete].splitlines():
            if raw.strip():
                c = parse_line(raw.decode("utf-8", errors="replace"))
                if c is not None:
                    out.append(c)
        return out

    def probe(self) -> str | None:
        """Why this process cannot read the file (None: it can, or it is not written yet)."""
        try:
            opened = self._open()
        except CdrUnreadable as exc:
            return str(exc)
        if opened is not None:
            opened[0].close()
        return None

    def _open(self) -> tuple[BinaryIO, os.stat_result] | None:
        """The file open for reading and its status; None when it is not written yet.

        Opened first, then checked: what is checked is what is read (a file rotated in
        between is not mistaken for another), and a folder, a FIFO or a file this user may
        not open is told as such rather than taken for an empty file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            if not os.path.isdir(self.path.parent):
                raise CdrUnreadable(
                    f"{self.path.parent}: no such folder (is Asterisk on this machine, "
                    "with asterisk-conf's cdr_custom_callflow.conf?)"
                ) from None
            return None
        except OSError as exc:
            raise CdrUnreadable(_why(self.path, exc)) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CdrUnreadable(f"{self.path}: not a file")
            return os.fdopen(fd, "rb"), st  # the file object owns the descriptor now
        except BaseException:
            os.close(fd)
            raise

    def _read(self, f: BinaryIO, st: os.stat_result) -> bytes:
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._inode, self._offset = st.st_ino, 0  # rotated or truncated: from the start
        if st.st_size == self._offset:
            return b""
        f.seek(self._offset)
        return f.read(st.st_size - self._offset)

    def _fail(self, why: str) -> None:
        if self.problem != why:
            log.error(
                "CDR: cannot read %s. Calls the dialplan fallback takes are not logged, nor "
                "what became of the calls shed, until it can be (asterisk-conf/README.md, "
                "Call records)",
                why,
            )
        self.problem = why

    def _readable_again(self) -> None:
        if self.problem is not None:
            self.problem = None
            log.info("CDR: %s can be read again", self.path)

    def _tell_exposure(self, st: os.stat_result) -> None:
        """Warn (once a file) when every user of the machine can read the callers' numbers."""
        if self._exposure_told == st.st_ino or not world_readable(self.path, st):
            return
        self._exposure_told = st.st_ino
        log.warning(
            "CDR: %s holds callers' numbers and every user of this machine can read it: "
            "chmod 750 %s (Asterisk and its group, the daemon's user in it): "
            "asterisk-conf/README.md, Call records",
            self.path,
            self.path.parent,
        )


def world_readable(path: Path, st: os.stat_result) -> bool:
    """Whether any user may read ``path``: it is readable by others and every folder above
    it may be crossed by others."""
    if not st.st_mode & stat.S_IROTH:
        return False
    for folder in path.resolve().parents:
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


__all__ = [
    "CdrCall",
    "CdrFile",
    "FallbackFate",
    "fallback_fate",
    "merge_calls",
    "older_handler",
    "parse_line",
    "world_readable",
]
