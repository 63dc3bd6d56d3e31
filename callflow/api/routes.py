"""The admin API's handlers (the table of routes is in ``web.py``)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..metrics import CONTENT_TYPE
from ..store.maintenance import complete_callback
from . import queries
from .accounts import NAME, Role
from .calendars import BadRequest, calendar_key, calendar_states, find, parse_override, view
from .context import AdminContext
from .drill_routes import get_drills, start_drill
from .http import (
    ACCESS,
    CONTEXT,
    EVERY_PRACTICE,
    SESSIONS,
    STATIC,
    WHO,
    ApiError,
    Handler,
    bearer,
    client_address,
    json_response,
    login_braked,
    login_refused,
    scope_of,
)
from .i18n import render_page

log = logging.getLogger("callflow.api")

MAX_ID = 2**63 - 1  # ids are 64-bit database integers
MAX_ERRORS = 50  # reload errors shown (and audited) at most


def add_routes(app: web.Application) -> None:
    app[_BACKLOG] = _Backlog()
    access: dict[Handler, Role | None] = {}
    every: set[Handler] = set()

    def api(
        method: str, path: str, handler: Handler, role: Role | None, *, global_only: bool = False
    ) -> None:
        app.router.add_route(method, path, handler)
        access[handler] = role
        if global_only:
            every.add(handler)

    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/", to_page)
    r.add_get("/page", to_page)
    r.add_get("/page/", page)
    r.add_get("/page/index.html", page)  # the template, filled, never served raw
    # Who may do what: the secretariat works the callback queue and the calendars; the
    # admin also reloads, reads the call log and the audit trail.
    secretariat, admin = Role.SECRETARIAT, Role.ADMIN
    api("POST", "/api/login", login, None)
    api("POST", "/api/logout", logout, secretariat)
    api("GET", "/api/calendars", get_calendars, secretariat)
    api("POST", "/api/calendars/{flow}/{calendar}/override", set_override, secretariat)
    api("DELETE", "/api/calendars/{flow}/{calendar}/override", cancel_override, secretariat)
    api("GET", "/api/callbacks", get_callbacks, secretariat)
    api("POST", r"/api/callbacks/{id:\d+}/done", callback_done, secretariat)
    api("GET", "/api/trunks", get_trunks, secretariat)
    # A scoped account sees its practices' data only (queries take its scope); what concerns
    # every practice needs a global credential.
    api("POST", "/api/reload", reload, admin, global_only=True)
    api("GET", "/api/calls", get_calls, admin)
    api("GET", "/api/calls/{id}", get_call, admin)
    api("GET", "/api/audit", get_audit, admin, global_only=True)
    # Forwarding drills: their results, and a drill now (a scoped admin: its practices' only).
    api("GET", "/api/drills", get_drills, admin)
    api("POST", "/api/drills/{flow}", start_drill, admin)
    app[ACCESS] = access
    app[EVERY_PRACTICE] = every


async def to_page(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/page/")


async def page(request: web.Request) -> web.StreamResponse:
    template = (STATIC / "index.html").read_text("utf-8")
    text = render_page(template, _ctx(request).language)
    return web.Response(text=text, content_type="text/html", charset="utf-8")


# -- helpers ------------------------------------------------------------------------------


def _ctx(request: web.Request) -> AdminContext:
    return request.app[CONTEXT]


def _db(ctx: AdminContext) -> AsyncEngine:
    if ctx.db is None:
        raise ApiError(503, "no call log database in this daemon")
    return ctx.db


def _probe(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:
        log.exception("health probe failed")
        return False


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name}: expected {lo} to {hi}, got {value}")
    return value


async def _body(request: web.Request) -> Any:
    """The request's JSON body ({} when empty); 400 when it is not JSON."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None


def _audit(ctx: AdminContext, who: str, action: str, detail: Mapping[str, Any]) -> None:
    if ctx.audit is None:
        log.warning("audit trail unavailable: %s %s %s", who, action, dict(detail))
        return
    ctx.audit(who, action, detail)


# -- logging in -----------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    """A person's name, token and TOTP code open a session (its bearer is the answer)."""
    ctx = _ctx(request)
    body = await _body(request)
    fields = ("name", "token", "code")
    if not isinstance(body, dict) or set(body) != set(fields):
        raise BadRequest('expected a JSON object {"name": ..., "token": ..., "code": ...}')
    name, token, code = (body[f] for f in fields)
    if not all(isinstance(v, str) for v in (name, token, code)) or not NAME.match(name):
        raise BadRequest('"name", "token" and "code" must be texts')
    braked = login_braked(request, name)
    if braked is not None:
        return braked
    opened = request.app[SESSIONS].login(name, token, code.strip(), ctx.clock())
    if opened is None:
        return login_refused(request, name, token, code)
    session, state = opened
    who = state.account.name
    log.info("login: %s (%s) from %s", who, state.account.role, client_address(request))
    _audit(ctx, who, "login", {"role": str(state.account.role)})
    lifetime = round(state.expires - time.monotonic())
    return json_response(
        {"session": session, "name": who, "role": str(state.account.role), "expires_in": lifetime}
    )


async def logout(request: web.Request) -> web.Response:
    given = bearer(request)
    if given is not None:
        request.app[SESSIONS].logout(given)
    return json_response({"ok": True})


def _audit_read(ctx: AdminContext, request: web.Request, what: str, ids: list[Any]) -> None:
    """Reads of personal data are audited: who saw which records (ids, never their content)."""
    _audit(ctx, request[WHO], "read", {"what": what, "count": len(ids), "ids": ids})


# -- health and metrics ---------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    problems: list[str] = []
    ari = _probe(ctx.ari_connected)
    if not ari:
        problems.append("ARI is not connected")
    try:
        flows = sorted(ctx.flows.current.flows)
    except Exception:
        log.exception("healthz: flows")
        flows = []
    if not flows:
        problems.append("no flow is loaded")
    body = {
        "status": "not ready" if problems else "ready",
        "problems": problems,
        "ari_connected": ari,
        "flows": flows,
        "checks": {name: _probe(fn) for name, fn in sorted(ctx.checks.items())},
    }
    return json_response(body, 503 if problems else 200)


@dataclass
class _Backlog:
    """Refreshes the metrics' callback backlog from the database, at most every interval."""

    last: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_BACKLOG = web.AppKey("callflow_backlog", _Backlog)


async def _refresh_backlog(app: web.Application, ctx: AdminContext) -> None:
    if ctx.db is None or ctx.metrics is None:
        return
    state = app[_BACKLOG]
    async with state.lock:
        if time.monotonic() - state.last < ctx.backlog_interval:
            return
        try:
            async with asyncio.timeout(ctx.db_timeout):
                backlog = await queries.callback_backlog(ctx.db, ctx.flows.current, ctx.clock())
        except Exception as exc:  # the scrape goes on with the last values
            log.warning("metrics: callback backlog not refreshed: %s", exc)
            return
        finally:
            state.last = time.monotonic()
        ctx.metrics.set_callback_backlog(backlog)


async def metrics(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    if ctx.metrics is None:
        raise ApiError(404, "no metrics in this daemon")
    await _refresh_backlog(request.app, ctx)
    return web.Response(body=ctx.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


# -- calendars ------------------------------------------------------------------------------


async def get_calendars(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    now = ctx.clock()
    scope = scope_of(request)
    states = calendar_states(ctx.flows.current, ctx.overrides, now)
    shown = [s.to_json() for s in states if scope.allows(s.flow)]
    return json_response({"now": now.isoformat(), "calendars": shown})


def _calendar(ctx: AdminContext, request: web.Request) -> tuple[Any, Any, str]:
    flow, name = request.match_info["flow"], request.match_info["calendar"]
    if not scope_of(request).allows(flow):
        raise ApiError(403, f"flow {flow!r} is not one of {request[WHO]}'s practices")
    found = find(ctx.flows.current, flow, name)
    if found is None:
        raise ApiError(404, f"no calendar {name!r} in flow {flow!r}")
    return found[0], found[1], calendar_key(flow, name)


async def set_override(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    flow, cal, key = _calendar(ctx, request)
    now = ctx.clock()
    who = request[WHO]
    override = parse_override(await _body(request), flow, now, who)
    async with asyncio.timeout(ctx.db_timeout):  # shared: written where every node reads
        await ctx.overrides.put(key, flow.name, override)
    state = "open" if override.open else "closed"
    log.warning(
        "calendar %s: override %s until %s by %s", key, state, override.until.isoformat(), who
    )
    _audit(
        ctx,
        who,
        "override set",
        {
            "calendar": key,
            "state": state,
            "until": override.until.isoformat(),
            "label": override.label,
        },
    )
    return json_response(view(flow, cal.name, cal, ctx.overrides, now).to_json())


async def cancel_override(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    flow, cal, key = _calendar(ctx, request)
    now = ctx.clock()
    who = request[WHO]
    current = ctx.overrides.get(key, now)
    if current is not None:
        async with asyncio.timeout(ctx.db_timeout):
            await ctx.overrides.remove(key)
        log.warning("calendar %s: override cancelled by %s", key, who)
        _audit(
            ctx,
            who,
            "override cancelled",
            {
                "calendar": key,
                "state": "open" if current.open else "closed",
                "until": current.until.isoformat(),
                "label": current.label,
            },
        )
    body = view(flow, cal.name, cal, ctx.overrides, now).to_json()
    return json_response({**body, "cancelled": current is not None})


# -- reload ---------------------------------------------------------------------------------


async def reload(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    outcome = ctx.reload()  # the daemon's reload is a coroutine (it parses off the loop)
    result = await outcome if inspect.isawaitable(outcome) else outcome
    errors = result.errors[:MAX_ERRORS]
    _audit(
        ctx,
        request[WHO],
        "reload",
        {"ok": result.ok, "flows": result.flows, "errors": errors},
    )
    body: dict[str, Any] = {"ok": result.ok, "flows": result.flows, "errors": errors}
    if result.ok:
        return json_response(body)
    more = len(result.errors) - len(errors)
    suffix = f" (and {more} more)" if more > 0 else ""
    body["error"] = f"reload refused: {len(result.errors)} error(s){suffix}; the flows run on"
    return json_response(body, 422)


# -- callbacks ------------------------------------------------------------------------------


async def get_callbacks(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    status = request.query.get("status", "pending")
    if status not in queries.CALLBACK_FILTERS:
        raise BadRequest(f"status: expected one of {', '.join(queries.CALLBACK_FILTERS)}")
    limit = _int_param(request, "limit", 200, 1, 1000)
    async with asyncio.timeout(ctx.db_timeout):
        rows = await queries.list_callbacks(
            _db(ctx), status=status, limit=limit, scope=scope_of(request)
        )
    now = ctx.clock()
    flows = ctx.flows.current
    shown = [queries.callback_json(r, flows, now) for r in rows]
    _audit_read(ctx, request, "callbacks", [c["id"] for c in shown])
    return json_response({"now": now.isoformat(), "callbacks": shown})


async def callback_done(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    db = _db(ctx)
    callback_id = int(request.match_info["id"])
    if callback_id > MAX_ID:  # the database's integers have 64 bits: no such request
        raise BadRequest(f"callback id out of range: {request.match_info['id'][:40]}")
    body = await _body(request)
    if not isinstance(body, dict) or set(body) - {"status"}:
        raise BadRequest('expected a JSON object {"status": "done"|"cancelled"}')
    status = body.get("status", "done")
    if status not in ("done", "cancelled"):
        raise BadRequest('"status" must be "done" or "cancelled"')
    who = request[WHO]  # from the credential, never from the request
    now = ctx.clock()
    async with asyncio.timeout(ctx.db_timeout):
        # Another practice's request is not found: its existence is not theirs to know.
        row = await queries.get_callback(db, callback_id, scope_of(request))
        if row is None:
            raise ApiError(404, f"no callback request {callback_id}")
        if row["status"] != "pending" or not await complete_callback(
            db, callback_id, by=who, at=now, status=status
        ):
            again = await queries.get_callback(db, callback_id, scope_of(request)) or row
            raise ApiError(
                409,
                f"callback request {callback_id} is not pending: {again['status']}"
                + (f" by {again['completed_by']}" if again["completed_by"] else ""),
                callback=queries.callback_json(again, ctx.flows.current, now),
            )
        done = await queries.get_callback(db, callback_id, scope_of(request)) or row
    log.info("callback %d %s by %s", callback_id, status, who)
    if status == "done" and ctx.metrics is not None:
        delay = (now - row["created"]).total_seconds()
        ctx.metrics.callback_completed(row["flow"], row["tier"], delay)
    return json_response(queries.callback_json(done, ctx.flows.current, now))


# -- calls, trunks, audit -------------------------------------------------------------------


async def get_calls(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    limit = _int_param(request, "limit", 50, 1, 500)
    flow = request.query.get("flow") or None
    async with asyncio.timeout(ctx.db_timeout):
        calls = await queries.recent_calls(
            _db(ctx), limit=limit, flow=flow, scope=scope_of(request)
        )
    _audit_read(ctx, request, "calls", [c["id"] for c in calls])
    return json_response({"calls": calls})


async def get_call(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    call_id = request.match_info["id"]
    async with asyncio.timeout(ctx.db_timeout):
        call = await queries.get_call(_db(ctx), call_id, scope_of(request))
    if call is None:
        raise ApiError(404, f"no call {call_id!r} in the call log")
    _audit_read(ctx, request, "call", [call_id])
    return json_response(call)


async def get_trunks(request: web.Request) -> web.Response:
    """This node's trunks live (``trunks``), and every node's last known trunk states from
    the call log (``nodes``: several nodes share the database)."""
    ctx = _ctx(request)
    body: dict[str, Any] = {"node": ctx.node, "live": False, "trunks": [], "nodes": {}}
    if ctx.trunks is not None:
        snap = ctx.trunks.snapshot_json()
        body.update(live=snap.get("live", False), trunks=snap.get("trunks", []))
    if ctx.db is not None:
        try:
            async with asyncio.timeout(ctx.db_timeout):
                body["nodes"] = await queries.trunks_by_node(ctx.db)
        except (DBAPIError, OSError, TimeoutError) as exc:  # this node's view still stands
            log.warning("trunks of the other nodes unavailable: %s", exc)
    return json_response(body)


async def get_audit(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    limit = _int_param(request, "limit", 50, 1, 500)
    async with asyncio.timeout(ctx.db_timeout):
        entries = await queries.recent_audit(_db(ctx), limit=limit)
    return json_response({"audit": entries})
