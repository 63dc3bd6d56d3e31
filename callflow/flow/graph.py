"""The step graph of a flow: which steps each step can go to, and where that is written."""

from __future__ import annotations

from collections.abc import Iterator

from . import schema
from .loader import PathKey


def step_edges(step: schema.Strict) -> Iterator[tuple[PathKey, str]]:
    """Yield (path inside the step, target step name) for every way out of ``step``."""
    match step:
        case schema.MenuStep(menu=menu, failed=failed):
            for key, target in menu.options.items():
                yield ("menu", "options", key), target
            if failed:
                yield ("failed",), failed
        case schema.ScheduleStep(open=open_, closed=closed, holiday=holiday):
            yield ("open",), open_
            yield ("closed",), closed
            if holiday:
                yield ("holiday",), holiday
        case schema.GotoStep(goto=target):
            yield ("goto",), target
        case schema.DialStep() | schema.ForwardStep():
            yield from _present(
                next=step.next, busy=step.busy, no_answer=step.no_answer, failed=step.failed
            )
        case schema.PlayStep(next=nxt) | schema.SetStep(next=nxt):
            yield ("next",), nxt
        case schema.SurveyStep(next=nxt):
            yield from _present(next=nxt)
        case (
            schema.EscalateStep(failed=failed)
            | schema.CallbackStep(failed=failed)
            | schema.VoicemailStep(failed=failed)
        ):
            yield from _present(failed=failed)
        case _:
            return


def _present(**branches: str | None) -> Iterator[tuple[PathKey, str]]:
    for field, target in branches.items():
        if target is not None:
            yield (field,), target


def ends_call(step: schema.Strict) -> bool:
    """True when the step can end the call by itself (a human, a message, a hangup ...)."""
    match step:
        case schema.HangupStep() | schema.CallbackStep() | schema.VoicemailStep():
            return True
        case (
            schema.DialStep(next=None)
            | schema.ForwardStep(next=None)
            | schema.SurveyStep(next=None)
        ):
            return True
        case schema.EscalateStep():
            return True
        case _:
            return False


def destinations_used(step: schema.Strict) -> Iterator[tuple[PathKey, str]]:
    match step:
        case schema.DialStep(dial=name):
            yield ("dial",), name
        case schema.ForwardStep(forward=name):
            yield ("forward",), name
        case schema.EscalateStep(escalate=spec):
            if spec.to:
                yield ("escalate", "to"), spec.to
            for i, name in enumerate(spec.ring_in_turn or []):
                yield ("escalate", "ring_in_turn", i), name
        case _:
            return
