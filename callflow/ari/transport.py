"""How ``AriClient``'s REST requests reach Asterisk: one narrow, typed seam.

``AriClient`` builds each request (path, query strings, JSON body), maps error statuses
onto the ``AriError`` tree and parses the answer; a ``RestTransport`` only carries one
request to Asterisk and brings back its answer, whatever the status.  ``HttpTransport``
does it over the client's aiohttp keep-alive pool; a fake Asterisk does it in the unit
tests; ``SocketTransport`` (``callflow.ari.websocket``) carries them over the events
websocket, with this one for when the socket is down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from callflow.ari.faults import AriConnectionError

__all__ = ["HttpTransport", "RestResponse", "RestTransport"]


@dataclass(frozen=True)
class RestResponse:
    """Asterisk's answer to one REST request.

    ``body`` is the raw answer (JSON, or empty); ``reason`` is the HTTP reason phrase, only
    used to name an error that comes without a body.
    """

    status: int
    body: bytes = b""
    reason: str = ""


class RestTransport(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,
        first: bool = False,
    ) -> RestResponse:
        """Send ``method`` ``/ari{path}`` with the query ``params`` and the JSON ``body``
        (``None``: no body); return the answer whatever its status.

        ``key`` names the channel the request acts on (None: none): a transport that has
        several ways to Asterisk sends one channel's requests so that they are carried out
        in order.  ``first``: the request of an emergency line, never queued behind the
        others'.  Raise ``TimeoutError`` when no complete answer came within ``timeout``
        seconds, and ``AriConnectionError`` when Asterisk cannot be reached.
        """
        ...


class HttpTransport:
    """REST over HTTP through an aiohttp session (the ARI client's bounded pool).

    ``session`` is called for each request so the client can create its session lazily
    and refuse requests once closed; ``headers`` carry the credentials.
    """

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        rest_url: str,
        headers: Mapping[str, str],
    ) -> None:
        self._session = session
        self._rest_url = rest_url
        self._headers = dict(headers)

    def __repr__(self) -> str:  # never show the Authorization header
        return f"HttpTransport({self._rest_url!r})"

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,  # no socket to choose: the callers await each request
        first: bool = False,  # the client's slots let it skip the queue
    ) -> RestResponse:
        session = self._session()
        try:
            async with session.request(
                method,
                self._rest_url + path,
                params=params,
                json=body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                return RestResponse(resp.status, await resp.read(), resp.reason or "")
        except TimeoutError:
            raise  # before ClientError: aiohttp's timeouts are both
        except aiohttp.ClientResponseError as exc:
            # A session made with raise_for_status: its error is still Asterisk's answer.
            return RestResponse(exc.status, b"", exc.message)
        except aiohttp.ClientError as exc:
            raise AriConnectionError(f"{method} {path}: cannot reach Asterisk: {exc}") from exc
