"""What every admin route and middleware shares: the app's keys, JSON errors, the page's
files, the token check and the security headers.  A leaf: it imports no route.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.exc import DBAPIError

from .auth import USER_HEADER, acting_user, token_name
from .calendars import BadRequest
from .context import AdminContext

log = logging.getLogger("callflow.api")

STATIC = Path(__file__).resolve().parent / "static"
CONTEXT = web.AppKey("callflow_admin_context", AdminContext)
TOKEN_NAME = web.RequestKey("callflow_token_name", str)  # the token's name
WHO = web.RequestKey("callflow_who", str)  # who acts, for the audit trail
MAX_BODY = 64 * 1024

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    resp = json_response({"error": message, **extra}, status)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON error; an unexpected one is logged, never shown."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, **exc.extra)
    except BadRequest as exc:
        return error_response(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects
        keep = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        return error_response(exc.status, exc.reason, keep)
    except (DBAPIError, OSError, TimeoutError) as exc:
        log.warning("%s %s: database unavailable: %s", request.method, request.path, exc)
        return error_response(503, "the call log's database is unavailable; try again")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error (see the daemon's log)")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``/api/`` needs a bearer token; sets ``request[WHO]`` for the audit trail."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    ctx = request.app[CONTEXT]
    if not ctx.tokens:
        raise ApiError(401, "the admin API is disabled: no [http] token_file is set")
    name = token_name(ctx.tokens, request.headers.get("Authorization"))
    if name is None:
        return error_response(
            401,
            "a valid token is required (Authorization: Bearer <token>)",
            {"WWW-Authenticate": 'Bearer realm="callflow"'},
        )
    request[TOKEN_NAME] = name
    request[WHO] = acting_user(name, request.headers.get(USER_HEADER))
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/page/") or request.path == "/":
        h.setdefault("Content-Security-Policy", _CSP)
    if request.path.startswith("/api/") or request.path == "/healthz":
        h.setdefault("Cache-Control", "no-store")


__all__ = [
    "CONTEXT",
    "MAX_BODY",
    "STATIC",
    "TOKEN_NAME",
    "WHO",
    "ApiError",
    "auth_middleware",
    "error_response",
    "errors_middleware",
    "json_response",
    "security_headers",
]
