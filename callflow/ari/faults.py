"""Errors raised by the ARI client.

Every failure of the ARI client is an ``AriError`` (a ``TelephonyError``, so one failed
action ends one step of one call)::

    AriError
    ├── AriConnectionError      Asterisk cannot be reached, or the client is closed
    │   ├── AriTimeout          no complete answer within the request timeout
    │   └── AriSocketDropped    the events websocket carrying the request dropped
    └── AriHTTPError            Asterisk answered with an error status
        ├── AriBadRequest       400 or 422: bad parameters or body
        ├── AriNotFound         404: e.g. the channel is gone (the caller hung up)
        ├── AriConflict         409: e.g. the channel is not in a Stasis application
        └── AriServerError      5xx: Asterisk itself failed

``AriConnectionError`` (and so its subclasses) and ``AriServerError`` are also
``PbxLinkError``: the link failed, not the action, and the engine sends the call to the
dialplan fallback instead of following the flow's ``failed`` branch.
"""

from __future__ import annotations

from callflow.errors import LinkFault, PbxLinkError, TelephonyError


class AriError(TelephonyError):
    """Base of every error raised by the ARI client."""


class AriConnectionError(AriError, PbxLinkError):
    """Asterisk cannot be reached (refused, reset, DNS, TLS...) or the client is closed."""

    fault = LinkFault.DISCONNECTED


class AriTimeout(AriConnectionError):
    """Asterisk did not answer within the request timeout."""

    fault = LinkFault.TIMEOUT


class AriSocketDropped(AriConnectionError):
    """The events websocket that carried the request dropped before its answer came: the
    request may or may not have been carried out, so it is not sent again."""


class AriHTTPError(AriError):
    """Asterisk answered a REST request with an error status.

    ``message`` is the ``message`` field of ARI's JSON error body when there is one,
    otherwise the start of the body or the HTTP reason phrase.
    """

    def __init__(self, status: int, message: str, method: str, path: str) -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        super().__init__(f"{method} {path} failed with HTTP {status}: {message}")

    def __reduce__(self) -> tuple[type[AriHTTPError], tuple[int, str, str, str]]:
        return (type(self), (self.status, self.message, self.method, self.path))


class AriBadRequest(AriHTTPError):
    """400 or 422: Asterisk rejected the parameters or the body of the request."""


class AriNotFound(AriHTTPError):
    """404: the resource does not exist (e.g. the channel is gone: the caller hung up)."""


class AriConflict(AriHTTPError):
    """409: the resource is in the wrong state (e.g. the channel is not in Stasis)."""


class AriServerError(AriHTTPError, PbxLinkError):
    """5xx: Asterisk failed to carry out a well-formed request (it is overloaded or broken)."""

    fault = LinkFault.SERVER_ERROR


_BY_STATUS: dict[int, type[AriHTTPError]] = {
    400: AriBadRequest,
    404: AriNotFound,
    409: AriConflict,
    422: AriBadRequest,
}


def error_for_status(status: int, message: str, method: str, path: str) -> AriHTTPError:
    """Build the ``AriHTTPError`` subclass that matches ``status``."""
    cls = _BY_STATUS.get(status, AriServerError if 500 <= status < 600 else AriHTTPError)
    return cls(status, message, method, path)
