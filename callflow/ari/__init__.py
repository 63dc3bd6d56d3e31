"""ARI (Asterisk REST Interface) client: REST calls and the reconnecting events websocket."""

from callflow.ari.client import (
    EVENT_CONNECTED,
    EVENT_DISCONNECTED,
    AriClient,
    AriConfig,
    ParamValue,
)
from callflow.ari.faults import (
    AriBadRequest,
    AriConflict,
    AriConnectionError,
    AriError,
    AriHTTPError,
    AriNotFound,
    AriServerError,
    AriSocketDropped,
    AriTimeout,
)
from callflow.ari.transport import HttpTransport, RestResponse, RestTransport
from callflow.ari.websocket import TRANSPORTS, SocketTransport, TransportMode

__all__ = [
    "EVENT_CONNECTED",
    "EVENT_DISCONNECTED",
    "TRANSPORTS",
    "AriBadRequest",
    "AriClient",
    "AriConfig",
    "AriConflict",
    "AriConnectionError",
    "AriError",
    "AriHTTPError",
    "AriNotFound",
    "AriServerError",
    "AriSocketDropped",
    "AriTimeout",
    "HttpTransport",
    "ParamValue",
    "RestResponse",
    "RestTransport",
    "SocketTransport",
    "TransportMode",
]
