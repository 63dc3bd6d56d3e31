"""What AMI says: its messages (``AmiMessage``, ``AmiList``) and the errors of the client.

Every failure of the AMI client is an ``AmiError`` (a ``TelephonyError``)::

    AmiError
    ├── AmiNotConnected     no logged-in session: never connected, lost, closed, or the
    │                       TCP connection to Asterisk cannot be made
    ├── AmiTimeout          no (complete) answer within the action timeout
    ├── AmiLoginError       Asterisk refused the login (user, secret, ACL, session limit)
    └── AmiActionError      Asterisk answered an action with ``Response: Error``

No message ever contains the secret.  A leaf: the client (``manager``) and the trunk
monitor (``qualify``) build on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from callflow.errors import TelephonyError

_SUCCESS: Final = frozenset({"success", "follows", "goodbye"})


@dataclass(frozen=True)
class AmiMessage:
    """One AMI event or response.

    Header names are case-insensitive (``get("aor")`` finds ``AOR``); values are
    stripped.  ``seq`` numbers the messages in their order of arrival on this client (it
    keeps growing across reconnections), so that a listing can be ordered against events.
    """

    headers: Mapping[str, str]
    seq: int = 0

    @classmethod
    def of(cls, fields: Mapping[str, Any], seq: int = 0) -> AmiMessage:
        headers: dict[str, str] = {}
        for key, value in fields.items():
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            headers[str(key).lower()] = text.strip()
        return cls(headers, seq)

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.headers

    @property
    def name(self) -> str:
        """The event's name ('' for a response)."""
        return self.get("Event")

    @property
    def ok(self) -> bool:
        """False for ``Response: Error`` (and anything but Success / Follows / Goodbye)."""
        return "event" in self.headers or self.get("Response").lower() in _SUCCESS


@dataclass(frozen=True)
class AmiList:
    """The answer to a list action: its response, the events, the ``*Complete`` event."""

    response: AmiMessage
    events: list[AmiMessage]
    complete: AmiMessage | None

    @property
    def seq(self) -> int:
        """``seq`` of the last message of the answer."""
        last = self.complete or (self.events[-1] if self.events else self.response)
        return last.seq


class AmiError(TelephonyError):
    """Base of every error raised by the AMI client."""


class AmiNotConnected(AmiError):
    """There is no logged-in AMI session to carry the action."""


class AmiTimeout(AmiError):
    """Asterisk did not answer (completely) within the action timeout."""


class AmiLoginError(AmiError):
    """Asterisk refused the login; ``message`` is its reason (never the secret)."""

    def __init__(self, text: str, message: str) -> None:
        self.message = message
        super().__init__(text)


class AmiActionError(AmiError):
    """Asterisk answered ``Response: Error``; ``message`` is its ``Message`` header."""

    def __init__(self, action: str, response: AmiMessage) -> None:
        self.action = action
        self.response = response
        self.message = response.get("Message")
        super().__init__(f"AMI {action}: {self.message or 'error'}")
