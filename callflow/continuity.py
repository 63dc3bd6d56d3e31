"""The continuity audit: over the coming weeks, does every caller reach someone?

``callflow check --horizon 60d`` walks the horizon in slots (15 minutes by default) and, for
each slot, plays every path a caller can take through the flow's menus in the simulator
(the real engine, every destination answering).  A path that ends at a dead end -- the
flow hangs up without having put the caller through to anyone, voicemail or a callback,
or fails -- is a gap: the long weekend whose closure nobody forwarded, the holiday whose
branch ends on a bare message.

Only what the calendars say changes the answer between two slots, so the paths are played
once per *situation* (the open / closed / holiday state of every calendar of the flow)
and the slots are grouped into periods of one situation.  Paths branch at each menu on
each option, and once more on "the caller presses nothing"; their number and depth are
bounded (``max_paths``, ``max_menus``) so a flow full of menus stays quick to audit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from .flow import schema
from .flow.events import OutcomeKind, StepKind
from .flow.registry import LoadedFlow
from .schedule import OverrideStore, Source
from .schedule.calendar import HORIZON
from .simulate import Scenario, simulate

#: A caller who ends here was put through to no one.
DEAD_ENDS = frozenset({OutcomeKind.HANGUP, OutcomeKind.FAILED})
SLOT = timedelta(minutes=15)
_CALLER = "0600000000"  # a callable number: a callback step is taken, not its failed branch

# The open/closed/holiday state of every calendar of a flow, in the flow's order.
Situation = tuple[tuple[str, bool, bool], ...]


@dataclass(frozen=True)
class CallerPath:
    """One way through the flow: the keys pressed (menu by menu) and where it ended."""

    keys: tuple[str, ...]  # the options chosen, menu by menu; then the caller presses nothing
    steps: tuple[str, ...]
    outcome: OutcomeKind
    end_step: str | None

    @property
    def dead_end(self) -> bool:
        return self.outcome in DEAD_ENDS

    def describe(self) -> str:
        pressed = f"keys {', '.join(self.keys)}" if self.keys else "no key"
        return f"{pressed}: {' → '.join(self.steps)} → {self.outcome}"


@dataclass(frozen=True)
class Gap:
    """A period during which a path ends at a dead end."""

    start: datetime
    end: datetime  # exclusive: the first slot after the period
    path: CallerPath


@dataclass(frozen=True)
class ContinuityReport:
    flow: str
    start: datetime
    end: datetime
    slots: int
    situations: int
    gaps: list[Gap]
    truncated: bool  # some situation had more paths than ``max_paths``: not all were played


class _Situations:
    """The flow's situation slot after slot; each calendar is asked again only once its
    answer's ``until`` has passed (the audit walks thousands of slots)."""

    def __init__(self, flow: LoadedFlow, overrides: OverrideStore) -> None:
        self.flow = flow
        self.overrides = overrides
        self._known: dict[str, tuple[tuple[str, bool, bool], datetime]] = {}

    def at(self, t: datetime) -> Situation:
        out = []
        for name, cal in self.flow.calendars.items():
            known = self._known.get(name)
            if known is None or t >= known[1]:
                state = cal.state_at(t, self.overrides.get(f"{self.flow.name}/{name}", t))
                valid = state.until if state.until is not None else t + HORIZON
                known = ((name, state.open, state.source is Source.HOLIDAY), valid)
                self._known[name] = known
            out.append(known[0])
        return tuple(out)


async def caller_paths(
    flow: LoadedFlow,
    at: datetime,
    *,
    overrides: OverrideStore | None = None,
    max_menus: int = 6,
    max_paths: int = 200,
) -> tuple[list[CallerPath], bool]:
    """Every path through the flow at ``at`` (bounded); True when the bound cut some."""
    dialed = flow.spec.numbers[0] if flow.spec.numbers else ""
    todo: list[tuple[str, ...]] = [()]
    paths: list[CallerPath] = []
    truncated = False
    while todo:
        if len(paths) >= max_paths:
            return paths, True
        keys = todo.pop(0)
        # The simulated caller presses ``keys`` at the first menus, one each, then nothing:
        # this run is also the path "nothing pressed" at the next menu.
        scenario = Scenario(digits=list(keys))
        transcript, outcome = await simulate(
            flow, scenario, at, caller=_CALLER, dialed=dialed, overrides=overrides
        )
        paths.append(CallerPath(keys, tuple(transcript.path), outcome.kind, outcome.step))
        menus = [r.step for r in transcript.steps if r.kind is StepKind.MENU]
        if len(menus) <= len(keys):
            continue  # no menu after the keys: nothing more to choose
        if len(keys) >= max_menus:
            truncated = True
            continue
        menu = flow.spec.steps[menus[len(keys)]]
        assert isinstance(menu, schema.MenuStep)
        todo.extend((*keys, key) for key in menu.menu.options)
    return paths, truncated


def slots(start: datetime, horizon: timedelta, step: timedelta = SLOT) -> Iterator[datetime]:
    t = start
    while t < start + horizon:
        yield t
        t += step


async def audit(
    flow: LoadedFlow,
    start: datetime,
    horizon: timedelta,
    *,
    step: timedelta = SLOT,
    overrides: OverrideStore | None = None,
) -> ContinuityReport:
    """The gaps of ``flow`` from ``start`` over ``horizon``, slot by slot."""
    overrides = overrides or OverrideStore()
    played: dict[Situation, list[CallerPath]] = {}
    truncated = False
    open_gaps: dict[CallerPath, datetime] = {}  # dead-end path → start of its period
    gaps: list[Gap] = []
    count = 0
    situations = _Situations(flow, overrides)
    for t in slots(start, horizon, step):
        count += 1
        sit = situations.at(t)
        if sit not in played:
            played[sit], cut = await caller_paths(flow, t, overrides=overrides)
            truncated = truncated or cut
        dead = {p for p in played[sit] if p.dead_end}
        for path in [p for p in open_gaps if p not in dead]:
            gaps.append(Gap(open_gaps.pop(path), t, path))
        for path in dead:
            open_gaps.setdefault(path, t)
    end = start + horizon
    gaps.extend(Gap(since, end, path) for path, since in open_gaps.items())
    gaps.sort(key=lambda g: (g.start, g.path.keys))
    return ContinuityReport(flow.name, start, end, count, len(played), gaps, truncated)


__all__ = ["DEAD_ENDS", "CallerPath", "ContinuityReport", "Gap", "audit", "caller_paths"]
