"""The flow file schema (version 1), as pydantic models.

Unknown keys are refused (``extra="forbid"``) and a step is a discriminated union keyed by
the one "kind" key it carries (``play``, ``menu``, ``dial`` ...).  Cross-references (a step
naming another step, a destination, a route or a calendar) are checked by ``validate``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from ..durations import parse_duration
from ..schedule.spec import CalendarSpec, parse_timezone


def _to_seconds(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    return value


Duration = Annotated[float, BeforeValidator(_to_seconds), Field(ge=0, le=24 * 3600)]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
KEY_PATTERN = r"^[0-9*#]$"
PHONE_PATTERN = r"^\+?[0-9]{1,20}$"
DIALED_PATTERN = r"^\+?[0-9*#]{1,32}$"
# A sound file as Asterisk names it (``custom/welcome``): no extension, no '..' segment.
SOUND_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$"
VARIABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAILBOX_PATTERN = r"^[A-Za-z0-9_.-]+(@[A-Za-z0-9_.-]+)?$"

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
Key = Annotated[str, Field(pattern=KEY_PATTERN)]  # one DTMF key as pressed on a phone
PhoneNumber = Annotated[str, Field(pattern=PHONE_PATTERN)]  # a number dialed out
Sound = Annotated[str, Field(pattern=SOUND_PATTERN, max_length=200)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Sounds = Annotated[list[Sound], BeforeValidator(_one_or_many)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- destinations and routes -------------------------------------------------------------

_ENDPOINT = re.compile(r"^[A-Za-z0-9]+/[A-Za-z0-9_.@:+-]+$")


class Destination(Strict):
    """Where a call can be sent: an internal endpoint, or an outside number over a route."""

    endpoint: str | None = None
    number: PhoneNumber | None = None
    route: Name | None = None
    ring: Duration = 30.0
    label: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint_form(cls, v: str | None) -> str | None:
        if v is not None and not _ENDPOINT.match(v):
            raise ValueError(
                f"invalid endpoint {v!r}, expected 'TECH/resource' such as 'PJSIP/accueil'"
            )
        return v

    @model_validator(mode="after")
    def _one_target(self) -> Destination:
        if (self.endpoint is None) == (self.number is None):
            raise ValueError("a destination needs exactly one of 'endpoint' or 'number'")
        if self.number is not None and self.route is None:
            raise ValueError("an outside 'number' needs a 'route' (the trunks it leaves by)")
        if self.endpoint is not None and self.route is not None:
            raise ValueError("'route' applies to an outside 'number', not to an 'endpoint'")
        return self


# --- steps -------------------------------------------------------------------------------


class PlayStep(Strict):
    play: Sounds = Field(min_length=1)
    barge_in: bool = False
    next: Name


class MenuSpec(Strict):
    prompt: Sound
    options: dict[Key, Name] = Field(min_length=1)
    timeout: Duration = 5.0
    attempts: int = Field(default=3, ge=1, le=10)
    invalid: Sound | None = None
    no_input: Sound | None = None
    barge_in: bool = True


class MenuStep(Strict):
    menu: MenuSpec
    failed: Name | None = None


class ScheduleStep(Strict):
    schedule: Name
    open: Name
    closed: Name
    holiday: Name | None = None


class DialStep(Strict):
    dial: Name
    next: Name | None = None  # after the bridged call ends (default: the call ends)
    busy: Name | None = None
    no_answer: Name | None = None
    failed: Name | None = None


class ForwardStep(Strict):
    forward: Name
    next: Name | None = None
    busy: Name | None = None
    no_answer: Name | None = None
    failed: Name | None = None


class EscalateSpec(Strict):
    tier: int = Field(ge=1, le=9)
    announce: Sounds = Field(default_factory=list)
    to: Name | None = None
    ring_in_turn: list[Name] | None = Field(default=None, min_length=1)
    oncall: Name | None = None  # a rotation of ``oncall:``: who is on call now, in turn
    confirm: Key | None = None
    callee_message: Sounds = Field(default_factory=list)
    confirm_timeout: Duration = 10.0
    total_timeout: Duration | None = None

    @model_validator(mode="after")
    def _one_target(self) -> EscalateSpec:
        given = [x for x in (self.to, self.ring_in_turn, self.oncall) if x is not None]
        if len(given) != 1:
            raise ValueError("an escalation needs exactly one of 'to', 'ring_in_turn' or 'oncall'")
        return self


class EscalateStep(Strict):
    escalate: EscalateSpec
    failed: Name | None = None


class CallbackSpec(Strict):
    queue: Name
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    announce: Sounds = Field(default_factory=list)


class CallbackStep(Strict):
    callback: CallbackSpec
    failed: Name | None = None  # when the caller's number cannot be called back


class VoicemailSpec(Strict):
    # A mailbox of voicemail.conf: "200" (context default) or "200@practice".
    box: Annotated[str, Field(pattern=MAILBOX_PATTERN, max_length=80)]


class VoicemailStep(Strict):
    voicemail: VoicemailSpec
    failed: Name | None = None


class SetStep(Strict):
    set: dict[Annotated[str, Field(pattern=VARIABLE_PATTERN)], str] = Field(min_length=1)
    next: Name


class SurveySpec(Strict):
    """A one-key rating of the conversation just ended: 1 (worst) to ``scale`` (best)."""

    prompt: Sound
    scale: int = Field(default=5, ge=2, le=9)
    timeout: Duration = 5.0  # waiting for the key after the prompt
    invalid: Sound | None = None  # played before asking again after a key outside the scale
    thanks: Sound | None = None  # played after a rating


class SurveyStep(Strict):
    """Asked after a ``dial``/``forward`` whose ``next`` names it, once the person the caller
    spoke to has hung up (never when the caller hung up first)."""

    survey: SurveySpec
    next: Name | None = None  # after the rating, or none (default: the call ends)


class GotoStep(Strict):
    goto: Name


class HangupSpec(Strict):
    announce: Sounds = Field(default_factory=list)


class HangupStep(Strict):
    hangup: HangupSpec | None = None

    @field_validator("hangup", mode="before")
    @classmethod
    def _empty(cls, v: Any) -> Any:
        return {} if v is None else v


STEP_KINDS: dict[str, type[Strict]] = {
    "play": PlayStep,
    "menu": MenuStep,
    "schedule": ScheduleStep,
    "dial": DialStep,
    "forward": ForwardStep,
    "escalate": EscalateStep,
    "callback": CallbackStep,
    "voicemail": VoicemailStep,
    "set": SetStep,
    "goto": GotoStep,
    "hangup": HangupStep,
    "survey": SurveyStep,
}


def step_kind(value: Any) -> str | None:
    """The kind of a raw step mapping: its one key naming a kind (None if not exactly one)."""
    if isinstance(value, BaseModel):
        return next(k for k, cls in STEP_KINDS.items() if isinstance(value, cls))
    if not isinstance(value, dict):
        return None
    kinds = [k for k in value if k in STEP_KINDS]
    return kinds[0] if len(kinds) == 1 else None


Step = Annotated[
    Annotated[PlayStep, Tag("play")]
    | Annotated[MenuStep, Tag("menu")]
    | Annotated[ScheduleStep, Tag("schedule")]
    | Annotated[DialStep, Tag("dial")]
    | Annotated[ForwardStep, Tag("forward")]
    | Annotated[EscalateStep, Tag("escalate")]
    | Annotated[CallbackStep, Tag("callback")]
    | Annotated[VoicemailStep, Tag("voicemail")]
    | Annotated[SetStep, Tag("set")]
    | Annotated[GotoStep, Tag("goto")]
    | Annotated[HangupStep, Tag("hangup")]
    | Annotated[SurveyStep, Tag("survey")],
    Discriminator(
        step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step needs exactly one kind key: " + ", ".join(STEP_KINDS),
    ),
]


# --- the flow file -----------------------------------------------------------------------


class OncallShift(Strict):
    """Who is on call while ``calendar`` is open (no calendar: the default shift)."""

    calendar: Name | None = None
    people: list[Name] = Field(min_length=1)


class QueueSpec(Strict):
    """A callback queue: a request not completed within ``overdue`` is shown overdue."""

    overdue: Duration = 24 * 3600.0
    label: str | None = None


class FlowFile(Strict):
    version: Literal[1]
    flow: Name
    description: str | None = None
    numbers: list[Annotated[str, Field(pattern=DIALED_PATTERN)]] = Field(min_length=1)
    timezone: str
    fallback: Name | None = None  # destination for calls the flow cannot carry on
    # An emergency line: its calls are never shed when the daemon is overloaded, and their
    # ARI requests go before the others'.
    never_shed: bool = False
    calendars: dict[Name, CalendarSpec] = Field(default_factory=dict)
    destinations: dict[Name, Destination] = Field(default_factory=dict)
    routes: dict[Name, list[Name]] = Field(default_factory=dict)
    # On-call rotations: the first shift whose calendar is open now, else the default one.
    oncall: dict[Name, list[OncallShift]] = Field(default_factory=dict)
    queues: dict[Name, QueueSpec] = Field(default_factory=dict)
    start: Name
    steps: dict[Name, Step] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return int(v) if isinstance(v, str) and v.isdigit() else v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            parse_timezone(v)
        except OSError:  # e.g. 'Europe' is a folder of the tz database, not a zone
            raise ValueError(f"unknown timezone {v!r}") from None
        return v

    @field_validator("routes")
    @classmethod
    def _routes(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, trunks in v.items():
            if not trunks:
                raise ValueError(f"route '{name}' lists no trunk")
            if len(set(trunks)) != len(trunks):
                raise ValueError(f"route '{name}' lists a trunk twice")
        return v
