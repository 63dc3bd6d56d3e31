"""The call log: every call and step in a database (SQLite or PostgreSQL), GDPR-ready.

``Store.from_settings(settings)`` builds everything from ``[database]`` and ``[privacy]``:

* ``store.recorder``: the engine's ``Observer`` and ``CallbackSink`` (``recorder.py``);
  run ``store.recorder.run()`` as a task, ``await store.recorder.close()`` at stop;
* ``await store.check_schema()``: refuses (``UserError``) a schema that is not this
  callflow's (``callflow db upgrade``); ``StoreUnavailable`` when the database does not
  answer (the daemon may start anyway: the recorder spools until it is back);
* ``await store.purge(now)``: retention (``maintenance.py``), daily;
* ``await store.dispose()``: closes the connection pool, last.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .maintenance import PurgeResult
    from .privacy import CallerPrivacy
    from .recorder import Recorder
    from .store import Store, StoreUnavailable

# Imported on first use, so that `callflow check` does not pay for SQLAlchemy.
_LAZY = {
    "PurgeResult": "maintenance",
    "CallerPrivacy": "privacy",
    "Recorder": "recorder",
    "Store": "store",
    "StoreUnavailable": "store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CallerPrivacy", "PurgeResult", "Recorder", "Store", "StoreUnavailable"]
