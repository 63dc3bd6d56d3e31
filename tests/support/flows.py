"""Flow texts and builders shared by the unit, API and browser tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from callflow.flow.loader import load_text
from callflow.flow.registry import LoadedFlow, compile_document

# The practice's flow as the admin API and page see it: two calendars, the desk, a
# callback queue.
PARC_FLOW = """
version: 1
flow: parc
numbers: ["100"]
timezone: Europe/Paris
fallback: desk
calendars:
  office:
    weekly: {mon-fri: ["08:00-12:30", "14:00-19:00"]}
  lab:
    weekly: {mon-sat: ["07:00-10:00"]}
destinations:
  desk: {endpoint: PJSIP/accueil}
queues:
  same-day: {overdue: 4h}
start: hours
steps:
  hours:
    schedule: office
    open: desk-call
    closed: cb
  desk-call:
    dial: desk
  cb:
    callback: {queue: same-day}
"""


def flow_text(text: str) -> str:
    """``text`` dedented, without its leading blank lines (as written in the tests)."""
    return textwrap.dedent(text).lstrip("\n")


def write_flow(directory: Path, text: str = PARC_FLOW, name: str = "parc.yaml") -> Path:
    """Write the flow ``text`` to ``directory/name`` (folders made as needed)."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(flow_text(text), encoding="utf-8")
    return path


def compile_flow(text: str, file: str = "t.yaml") -> LoadedFlow:
    """Load and check the flow ``text`` as if read from ``file``."""
    return compile_document(load_text(flow_text(text), file))


# Forwarding drills: a forward to the telephone secretariat over two trunks, and an
# emergency route (drilled as the trunks' health only, never called).
DRILL_FLOW = """
version: 1
flow: cabinet
numbers: ["100"]
timezone: Europe/Paris
destinations:
  telesecretariat: {number: "0180000000", route: outbound, ring: 6s}
  samu: {number: "15", route: outbound, ring: 10s}
routes:
  outbound: [trunk-a, trunk-b]
start: menu
steps:
  menu: {menu: {prompt: beep, options: {"1": tier-1}, attempts: 1}, failed: fwd}
  fwd: {forward: telesecretariat}
  tier-1: {escalate: {tier: 1, to: samu}, failed: fwd}
"""

# The same forward without the emergency route.
FORWARD_ONLY_FLOW = """
version: 1
flow: cabinet
numbers: ["100"]
timezone: Europe/Paris
destinations:
  telesecretariat: {number: "0180000000", route: outbound, ring: 6s}
routes:
  outbound: [trunk-a, trunk-b]
start: fwd
steps:
  fwd: {forward: telesecretariat}
"""
