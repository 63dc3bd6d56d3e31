"""The events websocket's frames: decoding them, and saying why a socket closed.

Shared by the events socket's reader (``callflow.ari.client``), the REST transport's probe
(``callflow.ari.websocket``) and the REST lanes' reader (``callflow.ari.lanes``).
"""

from __future__ import annotations

import json as jsonlib
import logging
from typing import Any, Final, Protocol

import aiohttp

__all__ = ["DATA_FRAMES", "decode", "drop_reason", "parse_frame"]

log = logging.getLogger("callflow.ari")

#: The websocket messages that carry a frame; any other says the socket is closing.
DATA_FRAMES: Final = (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)

# The events' decoder, called without ``json.loads``'s checks and whitespace scans around
# the C scanner (a fifth of a frame's decoding, and every call brings about ten frames).
_DECODER: Final = jsonlib.JSONDecoder()


def decode(data: str | bytes) -> Any:
    """``json.loads(data)``: the same value, or the same ``ValueError``."""
    if isinstance(data, str) and data[:1] == "{":  # Asterisk's frames: one object each
        value, end = _DECODER.raw_decode(data)
        # JSON's own whitespace only: str.isspace() would take what json.loads refuses.
        if end == len(data) or not data[end:].strip(" \t\n\r"):
            return value
    return jsonlib.loads(data)  # anything else: the full decoder takes it or refuses it


def parse_frame(data: str | bytes) -> dict[str, Any] | None:
    try:
        event = decode(data)
    except ValueError as exc:
        log.warning("ARI events: skipping a malformed frame (%d bytes): %s", len(data), exc)
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        log.warning("ARI events: skipping a frame that is not an event object")
        return None
    return event


class ClosedSocket(Protocol):
    """What ``drop_reason`` reads of a websocket that closed (aiohttp's client socket)."""

    def exception(self) -> BaseException | None: ...

    @property
    def close_code(self) -> int | None: ...


def drop_reason(ws: ClosedSocket, kind: aiohttp.WSMsgType, data: object) -> str:
    if kind is aiohttp.WSMsgType.ERROR:
        return f"websocket error: {data!r}"
    exc = ws.exception()
    if exc is not None:
        return f"connection lost: {exc!r}"
    if kind is aiohttp.WSMsgType.CLOSE:
        return f"closed by Asterisk (code {ws.close_code})"
    return f"connection closed (code {ws.close_code})"
