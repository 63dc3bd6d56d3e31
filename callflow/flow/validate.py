"""Graph checks of one flow: references, reachability, ways out and endless loops."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..errors import Diagnostic
from . import schema
from .graph import destinations_used, ends_call, step_edges
from .loader import Document


def _hint(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def validate_flow(flow: schema.FlowFile, doc: Document) -> list[Diagnostic]:
    """Every graph problem of ``flow``, located in ``doc``."""
    diags: list[Diagnostic] = []
    steps = flow.steps

    def unknown(path: tuple[str | int, ...], what: str, name: str, known: Iterable[str]) -> None:
        known = list(known)
        defined = f"; defined: {', '.join(sorted(known))}" if known and len(known) <= 12 else ""
        diags.append(doc.diagnostic(path, f"unknown {what} '{name}'{_hint(name, known)}{defined}"))

    if flow.start not in steps:
        unknown(("start",), "step", flow.start, steps)
    if flow.fallback is not None and flow.fallback not in flow.destinations:
        unknown(("fallback",), "destination", flow.fallback, flow.destinations)

    for dest_name, dest in flow.destinations.items():
        if dest.route is not None and dest.route not in flow.routes:
            unknown(("destinations", dest_name, "route"), "route", dest.route, flow.routes)

    for rot_name, shifts in flow.oncall.items():
        for i, shift in enumerate(shifts):
            base_path = ("oncall", rot_name, i)
            if shift.calendar is not None and shift.calendar not in flow.calendars:
                unknown((*base_path, "calendar"), "calendar", shift.calendar, flow.calendars)
            if shift.calendar is None and i != len(shifts) - 1:
                diags.append(
                    doc.diagnostic(
                        base_path,
                        "the default shift (no 'calendar') "
                        "must be the last: the shifts after it are never used",
                    )
                )
            for j, person in enumerate(shift.people):
                if person not in flow.destinations:
                    unknown((*base_path, "people", j), "destination", person, flow.destinations)
        if shifts and shifts[-1].calendar is not None:
            diags.append(
                doc.diagnostic(
                    ("oncall", rot_name),
                    f"rotation '{rot_name}' has no "
                    "default shift (one without 'calendar') at the end: "
                    "nobody would be on call outside its calendars",
                    key=True,
                )
            )

    edges: dict[str, list[str]] = {}
    broken: set[str] = set()  # steps naming an unknown step: reported once, not as a loop too
    for name, step in steps.items():
        base = ("steps", name)
        edges[name] = []
        for path, target in step_edges(step):
            if target in steps:
                edges[name].append(target)
            else:
                broken.add(name)
                unknown((*base, *path), "step", target, steps)
        for path, used in destinations_used(step):
            if used not in flow.destinations:
                unknown((*base, *path), "destination", used, flow.destinations)
        match step:
            case schema.ScheduleStep(schedule=cal) if cal not in flow.calendars:
                unknown((*base, "schedule"), "calendar", cal, flow.calendars)
            case schema.EscalateStep(escalate=spec) if (
                spec.oncall is not None and spec.oncall not in flow.oncall
            ):
                unknown((*base, "escalate", "oncall"), "on-call rotation", spec.oncall, flow.oncall)
            case schema.CallbackStep(callback=spec) if spec.queue not in flow.queues:
                unknown((*base, "callback", "queue"), "callback queue", spec.queue, flow.queues)
            case schema.MenuStep(failed=None):
                diags.append(
                    doc.diagnostic(
                        base,
                        f"menu '{name}' has no way out when the caller presses nothing or "
                        "only wrong keys: add 'failed: <step>'",
                        key=True,
                    )
                )
            case schema.GotoStep(goto=target) if target == name:
                diags.append(doc.diagnostic((*base, "goto"), f"step '{name}' goes to itself"))
            case _:
                pass

    diags += _survey_placement(flow, doc, edges)

    reachable = _reachable(flow.start, edges) if flow.start in steps else set(steps)
    for name in steps:
        if name not in reachable:
            diags.append(
                doc.diagnostic(
                    ("steps", name),
                    f"step '{name}' is unreachable from start '{flow.start}'",
                    key=True,
                )
            )

    # A loop with no exit: steps that are reachable but from which no step that can end
    # the call is reachable; the caller would go round for ever.
    finishers = {n for n, s in steps.items() if ends_call(s)} | broken
    can_finish = _reverse_reachable(finishers, edges)
    for name in sorted(reachable - can_finish, key=list(steps).index):
        cycle = _cycle_through(name, edges, reachable - can_finish)
        where = f": {' → '.join(cycle)}" if cycle else ""
        diags.append(
            doc.diagnostic(
                ("steps", name),
                f"step '{name}' is in a loop with no exit{where} (no path reaches a step "
                "that ends the call)",
                key=True,
            )
        )
    return diags


def _survey_placement(
    flow: schema.FlowFile, doc: Document, edges: dict[str, list[str]]
) -> list[Diagnostic]:
    """A survey rates a conversation: only the ``next`` of a ``dial``/``forward`` (taken
    once the callee hung up) may lead to it; and a caller who went through an emergency
    tier is never asked to rate the call."""
    steps = flow.steps
    surveys = {n for n, s in steps.items() if isinstance(s, schema.SurveyStep)}
    if not surveys:
        return []
    diags: list[Diagnostic] = []
    if flow.start in surveys:
        diags.append(
            doc.diagnostic(
                ("start",),
                f"the flow cannot start with survey '{flow.start}': a survey rates a "
                "conversation, so only the 'next' of a dial or forward step may name it",
            )
        )
    for name, step in steps.items():
        after_talk = isinstance(step, schema.DialStep | schema.ForwardStep)
        for path, target in step_edges(step):
            if target in surveys and not (after_talk and path == ("next",)):
                diags.append(
                    doc.diagnostic(
                        ("steps", name, *path),
                        f"'{'.'.join(str(p) for p in path)}' of step '{name}' leads to survey "
                        f"'{target}': a survey rates a conversation, so only the 'next' of a "
                        "dial or forward step (taken when the callee hangs up) may name it",
                    )
                )
    for name, step in steps.items():
        if not (isinstance(step, schema.EscalateStep) and step.escalate.tier == 1):
            continue
        for survey, route in _paths_from(name, edges, surveys).items():
            diags.append(
                doc.diagnostic(
                    ("steps", survey),
                    f"survey '{survey}' can follow the emergency tier 1 of step '{name}' "
                    f"({' → '.join(route)}): a caller who went through an emergency tier "
                    "is never asked to rate the call",
                    key=True,
                )
            )
    return diags


def _paths_from(start: str, edges: dict[str, list[str]], targets: set[str]) -> dict[str, list[str]]:
    """A shortest path from ``start`` to each step of ``targets`` it reaches."""
    parents: dict[str, str] = {}
    seen = {start}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in edges.get(node, []):
                if nxt not in seen:
                    seen.add(nxt)
                    parents[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    found: dict[str, list[str]] = {}
    for target in sorted(targets & seen - {start}):
        path = [target]
        while path[-1] != start:
            path.append(parents[path[-1]])
        found[target] = path[::-1]
    return found


def _reachable(start: str, edges: dict[str, list[str]]) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _reverse_reachable(targets: set[str], edges: dict[str, list[str]]) -> set[str]:
    back: dict[str, list[str]] = {}
    for src, dsts in edges.items():
        for dst in dsts:
            back.setdefault(dst, []).append(src)
    seen = set(targets)
    todo = list(targets)
    while todo:
        for prev in back.get(todo.pop(), []):
            if prev not in seen:
                seen.add(prev)
                todo.append(prev)
    return seen


def _cycle_through(start: str, edges: dict[str, list[str]], within: set[str]) -> list[str]:
    """A shortest cycle from ``start`` back to itself inside ``within`` (empty if none)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in edges.get(node, []):
                if nxt not in within:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if nxt not in parents:
                    parents[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return []
