"""Errors raised by the AMI client.

Every failure of the AMI client is an ``AmiError`` (a ``TelephonyError``)::

    AmiError
    ├── AmiNotConnected     no logged-in session: never connected, lost, closed, or the
    │                       TCP connection to Asterisk cannot be made
    ├── AmiTimeout          no (complete) answer within the action timeout
    ├── AmiLoginError       Asterisk refused the login (user, secret, ACL, session limit)
    └── AmiActionError      Asterisk answered an action with ``Response: Error``

No message ever contains the secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callflow.errors import TelephonyError

if TYPE_CHECKING:
    from callflow.ami.client import AmiMessage


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
