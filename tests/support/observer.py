"""The engine's observer as the tests read it: what the call log and the metrics would be
told about each call (one recording type instead of a copy per test module)."""

from __future__ import annotations

from datetime import datetime

from callflow.flow.events import CallAnswered, CallInfo, Outcome, StepRecord


class RecordingObserver:
    """Keeps every call start, step, answer and end it is told, in order."""

    def __init__(self) -> None:
        self.started: list[CallInfo] = []
        self.steps: list[StepRecord] = []
        self.answers: list[CallAnswered] = []
        self.ended: list[tuple[CallInfo, Outcome]] = []

    def call_started(self, info: CallInfo) -> None:
        self.started.append(info)

    def step(self, record: StepRecord) -> None:
        self.steps.append(record)

    def call_answered(self, event: CallAnswered) -> None:
        self.answers.append(event)

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        self.ended.append((info, outcome))

    @property
    def outcomes(self) -> list[Outcome]:
        return [outcome for _, outcome in self.ended]

    def path(self) -> list[tuple[str, str, str]]:
        """(step, kind, result) of every step, in order."""
        return [(r.step, r.kind.value, r.result.value) for r in self.steps]
