"""The Asterisk Manager Interface: a self-healing session and trunk health on top of it."""

from callflow.ami.manager import (
    AmiClient,
    AmiConfig,
    AmiList,
    AmiListener,
    AmiMessage,
    EventCallback,
)
from callflow.ami.messages import (
    AmiActionError,
    AmiError,
    AmiLoginError,
    AmiNotConnected,
    AmiTimeout,
)
from callflow.ami.qualify import AmiTrunkMonitor, live_snapshot

__all__ = [
    "AmiActionError",
    "AmiClient",
    "AmiConfig",
    "AmiError",
    "AmiList",
    "AmiListener",
    "AmiLoginError",
    "AmiMessage",
    "AmiNotConnected",
    "AmiTimeout",
    "AmiTrunkMonitor",
    "EventCallback",
    "live_snapshot",
]
