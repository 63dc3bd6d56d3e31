"""The one exception tree of callflow.

Every error a user can cause (a bad flow file, a bad setting) is a ``UserError`` and is
printed as a message, never as a traceback.  Telephony errors end one step of one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CallflowError(Exception):
    """Base of every error raised on purpose by callflow."""


class UserError(CallflowError):
    """A mistake in input the user controls (files, settings, command line)."""


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem found in a flow file, located at ``file:line:col`` (1-based)."""

    file: str
    line: int
    col: int
    message: str

    def __post_init__(self) -> None:
        # A diagnostic is one line: a user's key or value may hold line breaks or controls.
        one_line = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode() for c in self.message
        )
        object.__setattr__(self, "message", one_line)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class FlowError(UserError):
    """One or more flow files are invalid; ``diagnostics`` says where and why."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class SettingsError(UserError):
    """The daemon settings (file or environment) are invalid."""


class TelephonyError(CallflowError):
    """The telephony layer failed to carry out an action on a call."""


class CallerHangup(TelephonyError):
    """The caller hung up; the flow stops where it is and the call is logged as abandoned."""


class CallLost(CallerHangup):
    """The call's channel vanished without the caller hanging up (the PBX restarted, or its
    events were lost while disconnected): the call is logged as failed, not abandoned."""


class LinkFault(StrEnum):
    """Why the link to the PBX failed in the middle of a call."""

    TIMEOUT = "timeout"  # no answer in time (the PBX is overloaded, or the link is dead)
    DISCONNECTED = "disconnected"  # the connection dropped, or the PBX cannot be reached
    SERVER_ERROR = "server error"  # the PBX answered with a 5xx: it failed, not the request


class PbxLinkError(TelephonyError):
    """The link to the PBX failed, not the action asked of it: the daemon cannot drive the
    call any further, so the call goes to the PBX's own last resort (the dialplan fallback)
    and is logged ``failed``, whatever branch the flow gives for a failed step."""

    fault: LinkFault = LinkFault.DISCONNECTED
