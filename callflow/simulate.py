"""A simulated call for ``callflow simulate``: the real engine, a scripted caller and PBX.

Destinations answer and trunks are up unless the scenario says otherwise; the caller presses
the scenario's digits in turn, one per prompt, then nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .errors import CallerHangup
from .flow.engine import Engine
from .flow.events import CallAnswered, CallInfo, Outcome, StepKind, StepRecord
from .flow.registry import LoadedFlow
from .flow.services import InOrder, MemoryCallbacks, Services
from .schedule import OverrideStore
from .telephony import DialResult, DialStatus, Driver, Handoff


@dataclass
class Scenario:
    digits: list[str] = field(default_factory=list)
    no_answer: set[str] = field(default_factory=set)  # destination names
    busy: set[str] = field(default_factory=set)  # destination names
    decline: set[str] = field(default_factory=set)  # callees who do not press the confirm key
    down: set[str] = field(default_factory=set)  # trunk names
    voicemail_fails: bool = False
    hangup_after_prompts: int | None = None  # the caller hangs up after N prompts


def split_target(target: str) -> tuple[str, str | None]:
    """``PJSIP/0180@trunk-a`` → ('0180', 'trunk-a'); ``PJSIP/accueil`` → ('accueil', None)."""
    resource = target.split("/", 1)[-1]
    if "@" in resource:
        number, trunk = resource.split("@", 1)
        return number, trunk
    return resource, None


_ids = itertools.count(1)


class SimulatedCall:
    def __init__(self, flow: LoadedFlow, scenario: Scenario, *, caller: str, dialed: str) -> None:
        self._id = f"sim-{next(_ids)}"
        self._caller = caller
        self._dialed = dialed
        self.scenario = scenario
        self._digits = list(scenario.digits)
        self._prompts = 0
        self.actions: list[str] = []
        self.hung_up = False
        # Which destination name a dial string reaches, to apply the scenario by name.
        self._names: dict[str, str] = {}
        for name, dest in flow.spec.destinations.items():
            key = dest.endpoint.split("/", 1)[-1] if dest.endpoint else dest.number
            assert key is not None
            self._names.setdefault(key, name)

    @property
    def id(self) -> str:
        return self._id

    @property
    def caller(self) -> str:
        return self._caller

    @property
    def dialed(self) -> str:
        return self._dialed

    @property
    def driver(self) -> Driver:
        return Driver.SIMULATOR

    def _prompt(self) -> None:
        self._prompts += 1
        limit = self.scenario.hangup_after_prompts
        if limit is not None and self._prompts > limit:
            raise CallerHangup("simulated caller hung up")

    async def answer(self) -> None:
        self.actions.append("answer")

    async def play(self, prompts: Sequence[str], *, barge_in: bool = False) -> str:
        self._prompt()
        self.actions.append("play " + " ".join(prompts))
        return ""

    async def collect(
        self,
        prompt: str | None,
        *,
        max_digits: int,
        first_timeout: float,
        inter_timeout: float,
        barge_in: bool = True,
    ) -> str:
        self._prompt()
        digits = self._digits.pop(0) if self._digits else ""
        self.actions.append(f"collect {prompt} -> {digits or 'timeout'}")
        return digits

    def _status(self, target: str) -> DialStatus:
        resource, trunk = split_target(target)
        if trunk is not None and trunk in self.scenario.down:
            return DialStatus.CHANUNAVAIL
        name = self._names.get(resource, resource)
        if name in self.scenario.busy:
            return DialStatus.BUSY
        if name in self.scenario.no_answer:
            return DialStatus.NOANSWER
        return DialStatus.ANSWER

    async def dial(
        self,
        target: str,
        *,
        timeout: float,
        caller_id: str | None = None,
        setup_timeout: float | None = None,
        while_ringing: Sequence[str] = (),
    ) -> DialResult:
        status = self._status(target)
        self.actions.append(f"dial {target} -> {status}")
        return DialResult(status, 0.0 if status is DialStatus.ANSWER else None)

    async def dial_confirm(
        self,
        target: str,
        *,
        timeout: float,
        confirm: str,
        announce: Sequence[str],
        confirm_timeout: float,
        setup_timeout: float | None = None,
    ) -> DialResult:
        status = self._status(target)
        resource, _ = split_target(target)
        if status is DialStatus.ANSWER and self._names.get(resource) in self.scenario.decline:
            status = DialStatus.DECLINED
        self.actions.append(f"dial-confirm {target} -> {status}")
        return DialResult(status, 0.0 if status is DialStatus.ANSWER else None)

    async def voicemail(self, box: str) -> bool:
        self.actions.append(f"voicemail {box}")
        return not self.scenario.voicemail_fails

    async def set_variable(self, name: str, value: str) -> None:
        self.actions.append(f"set {name}={value}")

    async def last_resort(self) -> Handoff:
        self.actions.append("last resort")
        self.hung_up = True
        return Handoff.HANDED

    async def hangup(self) -> None:
        self.hung_up = True
        self.actions.append("hangup")

    def go_first(self) -> None:
        pass  # a simulated call queues behind nobody


class Transcript:
    """An observer that keeps everything the engine reported, for printing."""

    def __init__(self) -> None:
        self.info: CallInfo | None = None
        self.steps: list[StepRecord] = []
        self.answers: list[CallAnswered] = []
        self.outcome: Outcome | None = None

    def call_started(self, info: CallInfo) -> None:
        self.info = info

    def step(self, record: StepRecord) -> None:
        self.steps.append(record)

    def call_answered(self, event: CallAnswered) -> None:
        self.answers.append(event)

    def call_ended(self, info: CallInfo, outcome: Outcome, at: datetime) -> None:
        self.outcome = outcome

    @property
    def path(self) -> list[str]:
        inside = (StepKind.ATTEMPT, StepKind.FALLBACK)
        return [r.step for r in self.steps if r.kind not in inside]


async def simulate(
    flow: LoadedFlow,
    scenario: Scenario,
    at: datetime,
    *,
    caller: str,
    dialed: str,
    overrides: OverrideStore | None = None,
) -> tuple[Transcript, Outcome]:
    """Run one simulated call through ``flow`` at the instant ``at``."""
    transcript = Transcript()
    services = Services(
        clock=lambda: at.astimezone(UTC),
        overrides=overrides or OverrideStore(),
        trunks=InOrder(),
        callbacks=MemoryCallbacks(),
        observer=transcript,
    )
    call = SimulatedCall(flow, scenario, caller=caller, dialed=dialed)
    outcome = await Engine(services).run(flow, call)
    return transcript, outcome
