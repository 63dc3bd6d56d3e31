"""Forwarding drills: real test calls to each forwarding destination, trunk by trunk.

A pure room, like ``flow/`` and ``schedule/``: it says what to drill (``targets``), when
(``timing``: the last open hour before a closure, a holiday or a weekend) and what a drill
found (``results``); ``runner`` plays a drill through a ``TestCaller`` that an adapter
implements (``ari/testcall.py``), and ``scheduler`` is the daemon's part that runs them on
time.  Nothing here knows ARI, SQL or HTTP.
"""

from callflow.drills.results import DrillMode, DrillResult, TestCall
from callflow.drills.runner import DrillRunner, TestCaller, TrunkCheck
from callflow.drills.targets import (
    DrillTarget,
    EmergencyNumberRefused,
    drill_targets,
    forwarding_destinations,
    is_emergency_number,
)
from callflow.drills.timing import drill_times

__all__ = [
    "DrillMode",
    "DrillResult",
    "DrillRunner",
    "DrillTarget",
    "EmergencyNumberRefused",
    "TestCall",
    "TestCaller",
    "TrunkCheck",
    "drill_targets",
    "drill_times",
    "forwarding_destinations",
    "is_emergency_number",
]
