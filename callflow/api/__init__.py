"""The admin HTTP API, ``/metrics``, ``/healthz`` and the practice's page.

``create_app(AdminContext(...))`` builds the aiohttp application; ``AdminServer`` serves
it in the daemon's loop.  See ``web.py`` for the routes and ``auth.py`` for the tokens.
"""

from .auth import load_tokens
from .calendars import CalendarView, calendar_states
from .context import AdminContext, AuditFn, FlowSource, TrunkSource
from .server import AdminServer
from .web import create_app

__all__ = [
    "AdminContext",
    "AdminServer",
    "AuditFn",
    "CalendarView",
    "FlowSource",
    "TrunkSource",
    "calendar_states",
    "create_app",
    "load_tokens",
]
