"""The admin HTTP API, ``/metrics``, ``/healthz`` and the practice's page.

``create_app(AdminContext(...))`` builds the aiohttp application; ``AdminServer`` serves
it in the daemon's loop.  See ``web.py`` for the routes and ``accounts.py`` for who may
call them.
"""

from .accounts import Account, Credentials, Role, load_accounts, load_tokens
from .calendars import CalendarView, calendar_states
from .context import AdminContext, AuditFn, FlowSource, TrunkSource
from .server import AdminServer
from .web import create_app

__all__ = [
    "Account",
    "AdminContext",
    "AdminServer",
    "AuditFn",
    "CalendarView",
    "Credentials",
    "FlowSource",
    "Role",
    "TrunkSource",
    "calendar_states",
    "create_app",
    "load_accounts",
    "load_tokens",
]
