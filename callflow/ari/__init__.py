"""ARI (Asterisk REST Interface) client: REST calls and the reconnecting events websocket."""

from callflow.ari.client import (
    EVENT_CONNECTED,
    EVENT_DISCONNECTED,
    AriClient,
    AriConfig,
    ParamValue,
)
from callflow.ari.errors import (
    AriBadRequest,
    AriConflict,
    AriConnectionError,
    AriError,
    AriHTTPError,
    AriNotFound,
    AriTimeout,
)

__all__ = [
    "EVENT_CONNECTED",
    "EVENT_DISCONNECTED",
    "AriBadRequest",
    "AriClient",
    "AriConfig",
    "AriConflict",
    "AriConnectionError",
    "AriError",
    "AriHTTPError",
    "AriNotFound",
    "AriTimeout",
    "ParamValue",
]
