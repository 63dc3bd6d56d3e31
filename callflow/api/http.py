"""What every admin route and middleware shares: the app's keys, JSON errors, the page's
files, who may call which route (roles), and the security headers.  A leaf: it imports no
route.
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

from .accounts import Account, Role, Scope
from .calendars import BadRequest
from .context import AdminContext
from .sessions import Brake, Sessions

log = logging.getLogger("callflow.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC = Path(__file__).resolve().parent / "static"
CONTEXT = web.AppKey("callflow_admin_context", AdminContext)
#: The role each handler needs; None: open to all (the login).  Unlisted: admin only.
ACCESS = web.AppKey("callflow_access", dict[Handler, Role | None])
#: Handlers that concern every practice (reloads, the audit trail): no scoped account.
EVERY_PRACTICE = web.AppKey("callflow_every_practice", set[Handler])
SESSIONS = web.AppKey("callflow_sessions", Sessions)
BRAKE = web.AppKey("callflow_brake", Brake)
ACCOUNT = web.RequestKey("callflow_account", Account)  # who acts, from the credential
WHO = web.RequestKey("callflow_who", str)  # their name, for the audit trail
MAX_BODY = 64 * 1024

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


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


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def bearer(request: web.Request) -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    return given.strip() or None if scheme.lower() == "bearer" else None


def refused(request: web.Request, why: str) -> web.Response:
    """A 401, logged (never with what was offered) and counted against the client."""
    client = client_address(request)
    request.app[BRAKE].failed(client)
    log.warning("401 %s %s from %s: %s", request.method, request.path, client, why)
    return error_response(401, why, {"WWW-Authenticate": 'Bearer realm="callflow"'})


def _account(request: web.Request, ctx: AdminContext) -> Account | None:
    given = bearer(request)
    if given is None:
        return None
    account = request.app[SESSIONS].get(given)
    if account is not None:
        return account
    account = ctx.credentials.by_token(given)
    # A person's token alone opens nothing: it logs in, with the second factor.
    return None if account is None or account.needs_second_factor else account


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``/api/`` needs a session or a service token, and the route's role; sets
    ``request[ACCOUNT]`` and ``request[WHO]``.  Too many failures from one address: 429."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    ctx = request.app[CONTEXT]
    if not ctx.credentials:
        raise ApiError(401, "the admin API is disabled: no [http] accounts_file or token_file")
    wait = request.app[BRAKE].retry_after(client_address(request))
    if wait is not None:
        log.warning("429 %s %s from %s", request.method, request.path, client_address(request))
        return error_response(
            429, "too many failed attempts: try again later", {"Retry-After": str(int(wait))}
        )
    needed = request.app[ACCESS].get(request.match_info.handler, Role.ADMIN)
    if needed is None:
        return await handler(request)
    account = _account(request, ctx)
    if account is None:
        return refused(request, "a valid session or token is required (Authorization: Bearer)")
    if not account.role.allows(needed):
        log.warning(
            "403 %s %s for %s (%s)", request.method, request.path, account.name, account.role
        )
        raise ApiError(403, f"this needs the {needed} role; {account.name} is {account.role}")
    if not account.scope.is_global and request.match_info.handler in request.app[EVERY_PRACTICE]:
        log.warning("403 %s %s for %s (scoped)", request.method, request.path, account.name)
        raise ApiError(403, f"this concerns every practice; {account.name} sees {account.scope}")
    request[ACCOUNT] = account
    request[WHO] = account.name
    return await handler(request)


def scope_of(request: web.Request) -> Scope:
    """The practices the request's credential may see (every one when it is global)."""
    return request[ACCOUNT].scope


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
    "ACCESS",
    "ACCOUNT",
    "BRAKE",
    "CONTEXT",
    "EVERY_PRACTICE",
    "MAX_BODY",
    "SESSIONS",
    "STATIC",
    "WHO",
    "ApiError",
    "Handler",
    "auth_middleware",
    "bearer",
    "client_address",
    "error_response",
    "errors_middleware",
    "json_response",
    "refused",
    "scope_of",
    "security_headers",
]
