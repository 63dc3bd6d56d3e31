"""What every admin route and middleware shares: the app's keys, JSON errors, the page's
files, who may call which route (roles), and the security headers.  A leaf: it imports no
route.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.exc import DBAPIError

from .accounts import Account, Role, Scope, digest
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
    """Who is asking: the peer's address, or behind a trusted proxy (``[http] behind_proxy``)
    the address that proxy saw, i.e. the right-most ``X-Forwarded-For`` entry, the one it
    appends.  Entries to its left come from the client and could name anyone, so they are
    never read; without the header (or with garbage there) the proxy's own address is used.
    One proxy is trusted: a chain of proxies must give the daemon the client's address as
    the last entry.  Not behind a proxy, the header is ignored: anyone could send it."""
    peer = request.remote or "unknown"
    if not request.app[CONTEXT].behind_proxy:
        return peer
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
    last = forwarded.rpartition(",")[2].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer


def bearer(request: web.Request) -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    return given.strip() or None if scheme.lower() == "bearer" else None


def refused(request: web.Request, why: str) -> web.Response:
    """A 401, logged (never with what was offered); the brake is the caller's business."""
    log.warning("401 %s %s from %s: %s", request.method, request.path, client_address(request), why)
    return error_response(401, why, {"WWW-Authenticate": 'Bearer realm="callflow"'})


def too_many(request: web.Request, wait: float) -> web.Response:
    log.warning("429 %s %s from %s", request.method, request.path, client_address(request))
    return error_response(
        429, "too many failed attempts: try again later", {"Retry-After": str(int(wait))}
    )


def login_braked(request: web.Request, name: str) -> web.Response | None:
    """A 429 when ``name`` (or anyone) was guessed too often from this address, else None.
    Asked before the login is checked, so that a braked guess learns nothing.  Someone who
    shares an address (the practice's NAT) can so hold up new logins from it for a window,
    never a session already open; from another address they hold up nobody's login."""
    wait = request.app[BRAKE].login_wait(client_address(request), name)
    return None if wait is None else too_many(request, wait)


def login_refused(request: web.Request, name: str, token: str, code: str) -> web.Response:
    """A wrong login: counted against (address, name) and the address, then a 401.  The
    same wrong login sent again (a double click) counts once."""
    guess = digest("\0".join((name, token, code)))
    request.app[BRAKE].login_failed(client_address(request), name, guess)
    return refused(request, "the name, token or code is wrong (or the code was used)")


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


def _unknown_bearer(request: web.Request, ctx: AdminContext) -> web.Response:
    """The answer to a bearer that opened nothing, and what it costs the address.

    No bearer, or a person's token offered without the login: nothing was guessed, nothing
    counted.  Any other bearer may be a guess, or a session that ended: expired, or lost when
    the daemon restarted (sessions live in memory), which the daemon cannot tell from a
    guess.  It counts once per distinct bearer, so a page tab whose session ended costs one
    failure however many requests it sends, and an attacker pays for every new guess.

    What this brake can and cannot do: a valid session or token is checked before it and
    always passes, so it never locks out the staff sharing an address with an attacker, and
    for the same reason it cannot refuse a right guess.  What protects the bearers is their
    size: a session is 256 random bits, a service token at least ``MIN_TOKEN`` characters
    (``openssl rand -hex 24`` is advised).  The brake caps what a guesser gets answered and
    logged: past ``address_limit`` unknown bearers in the window, that address's unknown
    bearers get a 429 (and the page, whose valid session is never braked, logs in again).
    An attacker can make only their own address's dead sessions see 429 instead of 401,
    and behind a proxy they cannot pose as another address (``client_address``).
    """
    given = bearer(request)
    why = "a valid session or token is required (Authorization: Bearer)"
    if given is None:
        return refused(request, why)
    client = client_address(request)
    wait = request.app[BRAKE].bearer_wait(client)
    if wait is not None:  # a person's token too: a 401 there would tell a hit from a miss
        return too_many(request, wait)
    if ctx.credentials.by_token(given) is None:
        request.app[BRAKE].bearer_failed(client, digest(given))
    return refused(request, why)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``/api/`` needs a session or a service token, and the route's role; sets
    ``request[ACCOUNT]`` and ``request[WHO]``.  The credential is checked first: a valid
    one is never braked; too many unknown bearers from one address: 429 (the login
    brakes its own guesses, ``login_braked``)."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    ctx = request.app[CONTEXT]
    if not ctx.credentials:
        raise ApiError(401, "the admin API is disabled: no [http] accounts_file or token_file")
    needed = request.app[ACCESS].get(request.match_info.handler, Role.ADMIN)
    if needed is None:
        return await handler(request)
    account = _account(request, ctx)
    if account is None:
        return _unknown_bearer(request, ctx)
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
    "login_braked",
    "login_refused",
    "refused",
    "scope_of",
    "security_headers",
]
