"""What a drill calls: each forwarding destination of a flow, over each trunk of its route.

A *forwarding destination* is an outside number (``number`` + ``route``) that a ``forward:``
or a ``dial:`` step rings, or that an escalation tier 1 rings (``to``).  Internal phones
(``endpoint``) leave by no trunk and on-call people's mobiles are not drilled (a test call
would wake a doctor).  An emergency destination -- a tier 1 ``to``, or any French short
emergency or urgent number -- is never called: only its trunks' health is checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..flow import schema
from .results import DrillMode

# French emergency and urgent numbers (and the European 116 family): never a test call.
EMERGENCY_NUMBERS = frozenset(
    {
        "15",  # SAMU
        "17",  # police
        "18",  # pompiers
        "112",  # European emergency number
        "114",  # emergencies by SMS / fax (deaf and hard of hearing)
        "115",  # SAMU social
        "119",  # children in danger
        "191",  # aviation emergency
        "196",  # sea rescue
        "197",  # terror alert
        "3114",  # suicide prevention
        "3919",  # violence against women
    }
)
# Every 2- and 3-digit number starting with 1 is a special (mostly emergency) service, and
# 116xxx is the European family of harmonised numbers (116117: the on-call GP).
_SHORT_SERVICE = re.compile(r"1\d{1,2}|116\d{3}")


class EmergencyNumberRefused(Exception):
    """A test call to an emergency number was asked: refused, never originated."""


def _readings(number: str) -> set[str]:
    """Every way a trunk might read the number: as written (spaces, dots, dashes dropped),
    without an international prefix (``+``, ``00``: a carrier may drop the ``+``), and
    without France's country code after it or alone (``+33``, ``0033``, ``33``)."""
    d = re.sub(r"[\s.\-()]", "", number)
    out = {d}
    for prefix in ("+", "00"):
        if d.startswith(prefix):
            out.add(d[len(prefix) :])
    out |= {r[2:] for r in out if r.startswith("33")}
    return out


def is_emergency_number(number: str) -> bool:
    """True for a French emergency or urgent number (15, 17, 18, 112, 114, 115, 116117 …),
    however it is prefixed (``+112``, ``0033 15``, ``33112``)."""
    return any(
        r in EMERGENCY_NUMBERS or _SHORT_SERVICE.fullmatch(r) is not None for r in _readings(number)
    )


@dataclass(frozen=True)
class DrillTarget:
    """One leg of a drill: a destination over one trunk."""

    flow: str
    destination: str
    number: str
    trunk: str
    ring: float  # seconds: the destination's ring time, the drill's pass limit
    mode: DrillMode

    @property
    def endpoint(self) -> str:
        """The channel to originate (the engine's own form for an outside number)."""
        if self.mode is not DrillMode.CALL or is_emergency_number(self.number):
            raise EmergencyNumberRefused(f"{self.flow}/{self.destination}: no test call")
        return f"PJSIP/{self.number}@{self.trunk}"


def forwarding_destinations(spec: schema.FlowFile) -> dict[str, DrillMode]:
    """The flow's forwarding destinations (first-seen order of the steps), each with how it
    is drilled: a real call, or only its trunks' health (emergency)."""
    found: dict[str, DrillMode] = {}
    emergency: set[str] = set()
    for step in spec.steps.values():
        name: str | None = None
        if isinstance(step, schema.ForwardStep):
            name = step.forward
        elif isinstance(step, schema.DialStep):
            name = step.dial
        elif isinstance(step, schema.EscalateStep) and step.escalate.tier == 1:
            name = step.escalate.to
            if name is not None:
                emergency.add(name)
        dest = spec.destinations.get(name) if name is not None else None
        if name is None or dest is None or dest.number is None or dest.route is None:
            continue  # an internal phone: no trunk to drill
        found.setdefault(name, DrillMode.CALL)
    for name in found:
        number = spec.destinations[name].number or ""
        if name in emergency or is_emergency_number(number):
            found[name] = DrillMode.HEALTH
    return found


def drill_targets(spec: schema.FlowFile, destination: str | None = None) -> list[DrillTarget]:
    """Every (destination, trunk) leg of the flow's drill, in route order.  ``destination``
    limits it to one; a name that is not a forwarding destination is a ``ValueError``."""
    dests = forwarding_destinations(spec)
    if destination is not None:
        if destination not in dests:
            known = ", ".join(dests) or "none"
            raise ValueError(
                f"{destination!r} is not a forwarding destination of flow {spec.flow} "
                f"(forwarding destinations: {known})"
            )
        dests = {destination: dests[destination]}
    out: list[DrillTarget] = []
    for name, mode in dests.items():
        dest = spec.destinations[name]
        assert dest.number is not None and dest.route is not None  # forwarding_destinations
        for trunk in spec.routes.get(dest.route, []):
            out.append(DrillTarget(spec.flow, name, dest.number, trunk, dest.ring, mode))
    return out
