"""An in-process Asterisk 22 for the ARI websocket tests: an aiohttp server that answers
``RESTRequest`` frames over each events websocket the way Asterisk does (or ignores them,
like an older Asterisk), with HTTP routes beside it for the fallback.  Sockets of other
applications than ``callflow`` are REST lanes (``callflow.ari.lanes``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import WSMsgType, web

__all__ = ["APP", "Asterisk", "serve"]

APP = "callflow"


@dataclass
class Asterisk:
    """``speaks_rest``: answers RESTRequest frames (Asterisk 22.4+); ``silent``: paths whose
    requests get no answer; ``hold``: paths answered only when ``release`` is set.
    ``filters``: takes an application's event filter (Asterisk 13.26+), which then holds back
    every other event type, ``RESTResponse`` included, as Asterisk's does."""

    url: str = ""
    speaks_rest: bool = True
    filters: bool = True
    allowed: set[str] = field(default_factory=set)  # the event filter; empty: all
    silent: set[str] = field(default_factory=set)
    hold: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    frames: list[dict[str, Any]] = field(default_factory=list)  # RESTRequests received
    http: list[str] = field(default_factory=list)  # "METHOD /path" over HTTP
    sockets: list[web.WebSocketResponse] = field(default_factory=list)  # the events app's
    lanes: dict[str, list[web.WebSocketResponse]] = field(default_factory=dict)  # by app
    lane_gate: asyncio.Event | None = None  # when set: lanes' handshakes wait for it
    pongs: bool = True  # False: an Asterisk gone silent (pings unanswered, nothing closed)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == f"applications/{APP}/eventFilter" and method == "PUT":
            if not self.filters:  # an older Asterisk: no such route
                return 404, {"message": "Resource not found"}
            self.allowed = {str(e["type"]) for e in body.get("allowed", [])}
            return 200, {"name": APP, "events_allowed": body.get("allowed", [])}
        if path == "asterisk/ping":
            return 200, {"ping": "pong", "asterisk_id": "x"}
        if path.startswith("channels/gone"):
            return 404, {"message": "Channel not found"}
        if path == "broken":
            return 500, {"message": "Internal Server Error"}
        return 200, {"method": method, "path": path, "query": query, "body": body}

    async def events(self, request: web.Request) -> web.StreamResponse:
        app = request.query.get("app", "")
        if app != APP and self.lane_gate is not None:
            await self.lane_gate.wait()
        ws = web.WebSocketResponse(autoping=self.pongs)
        await ws.prepare(request)
        if app == APP:
            self.sockets.append(ws)
        else:
            self.lanes.setdefault(app, []).append(ws)
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:  # a ping a silent Asterisk does not answer
                continue
            frame = json.loads(msg.data)
            if frame.get("type") != "RESTRequest" or not self.speaks_rest:
                continue
            frame["app"] = app  # which socket carried it (not in Asterisk's frame)
            self.frames.append(frame)
            task = asyncio.ensure_future(self._reply(ws, frame))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return ws

    async def _reply(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        uri = urlsplit(frame["uri"])
        if uri.path in self.silent:
            return
        if uri.path in self.hold:
            await self.release.wait()
        body = json.loads(frame["message_body"]) if "message_body" in frame else None
        status, answer = self.answer(frame["method"], uri.path, dict(parse_qsl(uri.query)), body)
        await self.send(
            ws,
            {
                "type": "RESTResponse",
                "request_id": frame["request_id"],
                "status_code": status,
                "reason_phrase": "OK" if status == 200 else "Error",
                "uri": frame["uri"],
                "content_type": "application/json",
                "message_body": json.dumps(answer),
            },
        )

    async def send(self, ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
        """An event to the application, unless its filter holds that type back."""
        if not self.allowed or event["type"] in self.allowed:
            await ws.send_str(json.dumps(event))

    async def rest(self, request: web.Request) -> web.StreamResponse:
        path = request.path.removeprefix("/ari/")
        self.http.append(f"{request.method} /{path}")
        if path in self.hold:
            await self.release.wait()
        body = await request.json() if request.can_read_body else None
        status, answer = self.answer(request.method, path, dict(request.query), body)
        return web.json_response(answer, status=status)


@asynccontextmanager
async def serve() -> AsyncIterator[Asterisk]:
    """Run a fake Asterisk on a free local port until the block ends."""
    fake = Asterisk()
    app = web.Application()
    app.router.add_get("/ari/events", fake.events)
    app.router.add_route("*", "/ari/{tail:.*}", fake.rest)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        fake.release.set()
        if fake.lane_gate is not None:
            fake.lane_gate.set()
        for ws in fake.sockets + [w for lane in fake.lanes.values() for w in lane]:
            await ws.close()
        await runner.cleanup()
