"""The admin API's drill routes: the last results (``GET /api/drills``) and a drill now
(``POST /api/drills/{flow}``, admin).  The daemon's drills part places the calls."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from sqlalchemy.exc import DBAPIError

from ..drills.scheduler import LegReading
from ..store.drill_log import NodeDrills, by_node
from .context import AdminContext, DrillSource
from .http import CONTEXT, WHO, ApiError, json_response, scope_of

log = logging.getLogger("callflow.api")

MAX_BODY = 4096


def _drills(request: web.Request) -> tuple[AdminContext, DrillSource]:
    ctx: AdminContext = request.app[CONTEXT]
    if ctx.drills is None:
        raise ApiError(503, "forwarding drills are not available (no ARI in this process)")
    return ctx, ctx.drills


def _leg(r: LegReading) -> dict[str, Any]:
    return {
        "flow": r.flow,
        "destination": r.destination,
        "trunk": r.trunk,
        "mode": str(r.mode),
        "last": None if r.last is None else r.last.to_json(),
        "last_success": None if r.last_success is None else r.last_success.at.isoformat(),
    }


def _other_legs(found: NodeDrills, allows: Callable[[str], bool]) -> list[dict[str, Any]]:
    legs = []
    for key in sorted(found.last.keys() | found.last_success.keys()):
        flow, destination, trunk = key
        if not allows(flow):
            continue
        last, ok = found.last.get(key), found.last_success.get(key)
        seen = last or found.last_success[key]  # one of the two, by the keys' union
        legs.append(
            {
                "flow": flow,
                "destination": destination,
                "trunk": trunk,
                "mode": str(seen.mode),
                "last": None if last is None else last.to_json(),
                "last_success": None if ok is None else ok.at.isoformat(),
            }
        )
    return legs


async def get_drills(request: web.Request) -> web.Response:
    """This node's legs (``legs``: its own trunks), and the other nodes' last results from
    the call log (``nodes``: several nodes share the database, each over its own trunks)."""
    ctx, drills = _drills(request)
    scope = scope_of(request)
    upcoming = {
        f: (None if t is None else t.isoformat())
        for f, t in drills.next_drill.items()
        if scope.allows(f)
    }
    nodes: dict[str, list[dict[str, Any]]] = {}
    if ctx.db is not None:
        try:
            async with asyncio.timeout(ctx.db_timeout):
                found = await by_node(ctx.db)
        except (DBAPIError, OSError, TimeoutError) as exc:  # this node's view still stands
            log.warning("drills of the other nodes unavailable: %s", exc)
        else:
            for node in sorted(found.keys() - {ctx.node}):
                legs = _other_legs(found[node], scope.allows)
                if legs:
                    nodes[node] = legs
    return json_response(
        {
            "node": ctx.node,
            "legs": [_leg(r) for r in drills.readings() if scope.allows(r.flow)],
            "next": upcoming,
            "running": drills.runner.running,
            "nodes": nodes,
        }
    )


async def start_drill(request: web.Request) -> web.Response:
    """Drill a flow now; the answer comes when every leg is done (a leg lasts at most its
    destination's ring time).  Body: none, or ``{"destination": NAME}``."""
    ctx, drills = _drills(request)
    flow = request.match_info["flow"]
    if not scope_of(request).allows(flow):  # another practice's flow: as if it did not exist
        raise ApiError(404, f"no flow {flow!r}")
    destination = await _destination(request)
    who = request[WHO]
    if ctx.audit is not None:  # who asked for a test call, and of what
        ctx.audit(who, "drill", {"flow": flow, "destination": destination})
    try:
        results = await drills.drill(flow, destination)
    except KeyError:
        raise ApiError(404, f"no flow {flow!r}") from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    except RuntimeError as exc:
        raise ApiError(503, str(exc)) from None
    log.info("drill of %s by %s: %d leg(s)", flow, who, len(results))
    return json_response(
        {
            "flow": flow,
            "passed": all(r.passed for r in results),
            "results": [r.to_json() for r in results],
        }
    )


async def _destination(request: web.Request) -> str | None:
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(413, "request body too large")
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(body, dict) or set(body) - {"destination"}:
        raise ApiError(400, 'expected no body or a JSON object {"destination": NAME}')
    dest = body.get("destination")
    if dest is not None and not isinstance(dest, str):
        raise ApiError(400, '"destination" must be a text')
    return dest
