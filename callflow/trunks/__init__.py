"""Trunks: their health from qualify (``health``) and the failover policy built on it
(``selector``).  Pure state driven by an injected clock; the AMI feed that keeps it in step
with Asterisk is ``callflow.ami.qualify``."""

from .health import ContactUpdate, HealthChange, TrunkChange, TrunkHealth, TrunkSnapshot, TrunkState
from .selector import SNAPSHOT_FILE, SNAPSHOT_VERSION, HealthAwareSelector, read_snapshot

__all__ = [
    "SNAPSHOT_FILE",
    "SNAPSHOT_VERSION",
    "ContactUpdate",
    "HealthAwareSelector",
    "HealthChange",
    "TrunkChange",
    "TrunkHealth",
    "TrunkSnapshot",
    "TrunkState",
    "read_snapshot",
]
