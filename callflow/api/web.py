"""The admin HTTP application: ``create_app(ctx)``, its middlewares and the page's files.

Routes (see ``routes.py``):

=========================================================  =====================================
``GET /healthz``                                           200 ready / 503 not, JSON says why
``GET /metrics``                                           Prometheus text format
``GET /`` → ``/page/``                                     the practice's page (static files)
``POST /api/login``                                        ``{"name", "token", "code"}``: a session
``POST /api/logout``                                       ends this session
``GET /api/calendars``                                     each calendar's state now
``POST /api/calendars/{flow}/{calendar}/override``         ``{"state", "until", "label"}``
``DELETE /api/calendars/{flow}/{calendar}/override``       cancels it
``POST /api/reload``                                       reloads the flows (like SIGHUP)
``GET /api/callbacks?status=pending&limit=200``            callback requests
``POST /api/callbacks/{id}/done``                          ``{"who": ...}`` optional
``GET /api/calls?limit=50&flow=F``                         recent calls with their steps
``GET /api/calls/{id}``                                    one call with its steps
``GET /api/trunks``                                        trunk states
``GET /api/audit?limit=50``                                the audit trail's last entries
=========================================================  =====================================

Every ``/api/`` route but the login needs a session or a service token and a role
(``accounts.py``, ``sessions.py``; checked in ``http.py``, the roles beside the routes); every
error is a JSON ``{"error": "..."}`` with a 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from . import routes
from .context import AdminContext
from .http import (
    BRAKE,
    CONTEXT,
    MAX_BODY,
    SESSIONS,
    STATIC,
    auth_middleware,
    errors_middleware,
    security_headers,
)
from .sessions import Brake, Sessions

log = logging.getLogger("callflow.api")


def create_app(ctx: AdminContext) -> web.Application:
    """The admin application over ``ctx`` (serve it with ``AdminServer`` or a test client)."""
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=MAX_BODY
    )
    app[CONTEXT] = ctx
    app[SESSIONS] = Sessions(ctx.credentials, time.monotonic)
    app[BRAKE] = Brake(time.monotonic)
    app.on_response_prepare.append(security_headers)
    routes.add_routes(app)
    app.router.add_static("/page/", STATIC, follow_symlinks=False, append_version=False)
    if not ctx.credentials:
        log.warning("admin API: no accounts or tokens: every /api/ route is refused (401)")
    return app


__all__ = ["create_app"]
