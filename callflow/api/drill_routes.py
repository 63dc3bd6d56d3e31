"""The admin API's drill routes: the last results (``GET /api/drills``) and a drill now
(``POST /api/drills/{flow}``, admin).  The daemon's drills part places the calls."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from ..drills.scheduler import LegReading
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


async def get_drills(request: web.Request) -> web.Response:
    _ctx, drills = _drills(request)
    scope = scope_of(request)
    upcoming = {
        f: (None if t is None else t.isoformat())
        for f, t in drills.next_drill.items()
        if scope.allows(f)
    }
    return json_response(
        {
            "legs": [_leg(r) for r in drills.readings() if scope.allows(r.flow)],
            "next": upcoming,
            "running": drills.runner.running,
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
