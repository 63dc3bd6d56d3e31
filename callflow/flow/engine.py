"""The flow engine: runs one call through the steps of a flow.

It speaks only the ``Call`` protocol and the ``Services`` protocols, so the simulator, ARI
and tests drive the very same code.  Each call runs in its own ``_Run``; every error is
caught at the step that raised it, so one call's trouble never touches another call, and a
call the flow cannot carry on goes to the flow's ``fallback`` destination, never to silence.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import CallerHangup, CallLost, PbxLinkError, TelephonyError
from ..schedule import Source
from ..telephony import Call, DialResult, DialStatus, Handoff, voicemail_refused
from . import schema
from .events import CallAnswered, CallInfo, Outcome, OutcomeKind, StepKind, StepRecord, StepResult
from .oncall import on_call
from .registry import LoadedFlow
from .services import CallbackRequest, Services, callable_number

log = logging.getLogger("callflow.call")


@dataclass
class _Result:
    """How a step ended: the typed fields of its record, its way out, and, when the step
    decided how the call ends, the outcome."""

    result: StepResult
    next: str | None = None
    outcome: Outcome | None = None
    detail: str = ""
    key: str | None = None
    attempt: int | None = None
    destination: str | None = None
    trunk: str | None = None
    dial_status: DialStatus | None = None
    score: int | None = None
    scale: int | None = None
    # The step ends the call when it has no ``next``, keeping who was reached (a survey).
    ends: bool = False
    # The caller hung up during the step, which still ended as recorded (a survey).
    caller_gone: bool = False


@dataclass
class _Rung:
    """What ringing one destination gave: the status, and over which trunk if any."""

    status: DialStatus
    trunk: str | None = None
    caller_hung_up: bool = False  # answered, and the caller ended the conversation
    detached: bool = False  # answered, and the daemon stopped while it went on


def _answered_at(started: datetime, result: DialResult) -> datetime | None:
    if result.status is not DialStatus.ANSWER or result.answer_delay is None:
        return None
    return started + timedelta(seconds=result.answer_delay)


class Engine:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def run(self, flow: LoadedFlow, call: Call) -> Outcome:
        """Run ``call`` through ``flow`` to its end; never raises for a call's trouble."""
        return await _Run(self.services, flow, call).run()

    async def rescue(self, flow: LoadedFlow, call: Call, why: str) -> Outcome:
        """Send a call found stranded (e.g. after a restart) straight to the fallback.
        Its records are numbered from ``RESCUE_SEQ``: they follow, and never collide
        with, what the run a crash interrupted had recorded for the same call."""
        run = _Run(self.services, flow, call)
        run.seq = RESCUE_SEQ
        return await run.run(rescue=why)

    async def shed(self, flow: LoadedFlow, call: Call, why: str) -> Outcome:
        """The daemon is overloaded: hand a new call straight to the PBX's last resort
        (the dialplan fallback) without running a step, and log it ``shed`` with ``why``."""
        return await _Run(self.services, flow, call).shed(why)


#: The first step number of a rescue, past any run's records (``max_steps`` steps, each
#: with its attempts).
RESCUE_SEQ = 100_000


def mask(number: str) -> str:
    """A caller number for logs: enough to tell calls apart, not to identify a patient."""
    return number if len(number) <= 4 else "*" * (len(number) - 2) + number[-2:]


_LONG_DIGITS = re.compile(r"\+?\d(?:[\d .-]{4,}\d)")


def _no_numbers(text: str) -> str:
    """Text from elsewhere (an exception, the PBX) for a step's prose: any phone-number-like
    run of digits masked, since the prose is kept and shown but must never carry one."""
    return _LONG_DIGITS.sub(lambda m: mask(re.sub(r"\D", "", m.group())), text)


#: A parsed step's kind by its model's class (every parsed step has one): a dict lookup per
#: step instead of a scan of the kinds and an Enum call, which showed in a profile under load.
_KINDS: dict[type, StepKind] = {cls: StepKind(k) for k, cls in schema.STEP_KINDS.items()}


class _Run:
    def __init__(self, services: Services, flow: LoadedFlow, call: Call) -> None:
        self.s = services
        self.flow = flow
        self.spec = flow.spec
        self.call = call
        self.seq = 0
        self.rings = 0  # destinations rung in the current step: each attempt's number
        self.answered = False
        self.tier: int | None = None
        self.step_name: str | None = None
        self.reached: Outcome | None = None  # who took the call, when the flow goes on after
        self.info = CallInfo(
            call_id=call.id,
            flow=flow.name,
            version=flow.version,
            caller=call.caller,
            dialed=call.dialed,
            started=services.clock(),
            driver=call.driver,
        )

    # -- the main loop -------------------------------------------------------------------

    def _begin(self) -> None:
        self.s.observer.call_started(self.info)
        log.info(
            "call=%s flow=%s version=%s event=start driver=%s caller=%s dialed=%s",
            self.call.id,
            self.flow.name,
            self.flow.version,
            self.call.driver,
            mask(self.call.caller),
            self.call.dialed,
        )

    async def shed(self, why: str) -> Outcome:
        self._begin()
        try:
            handoff = await self.call.last_resort()
        except asyncio.CancelledError:
            self._end(Outcome(OutcomeKind.FAILED, None, detail=f"shed ({why}); daemon stopped"))
            raise
        if handoff is Handoff.HANDED:
            outcome = Outcome(OutcomeKind.SHED, None, detail=why)
        elif handoff is Handoff.CALLER_GONE:  # not a failure of ours (review)
            outcome = Outcome(
                OutcomeKind.ABANDONED, None, detail=f"shed ({why}); the caller hung up first"
            )
        else:
            outcome = Outcome(
                OutcomeKind.FAILED, None, detail=f"shed ({why}); dialplan fallback not reached"
            )
        self._end(outcome)
        return outcome

    async def run(self, rescue: str | None = None) -> Outcome:
        self._begin()
        try:
            walk = self._walk() if rescue is None else self._fallback(rescue, rescued=True)
            outcome = await walk
        except CallLost as exc:
            # Not the caller's doing: the PBX lost the call (it restarted, say).
            outcome = self.reached or Outcome(
                OutcomeKind.FAILED,
                self.step_name,
                tier=self.tier,
                detail=_no_numbers(f"call lost: {exc}"),
            )
        except CallerHangup:
            # Hanging up after talking to someone is the normal end of a call.
            outcome = self.reached or Outcome(
                OutcomeKind.ABANDONED, self.step_name, tier=self.tier, detail="caller hung up"
            )
        except asyncio.CancelledError:
            # The daemon is stopping: record the call as it stands (someone reached keeps
            # the call's outcome, as a survey after the conversation), then let it end.
            self._end(
                self.reached
                or Outcome(
                    OutcomeKind.FAILED,
                    self.step_name,
                    tier=self.tier,
                    detail="daemon stopped during the call",
                )
            )
            raise
        self._end(outcome)
        if outcome.kind is OutcomeKind.FAILED:
            await self._last_resort()
        elif outcome.kind is not OutcomeKind.ABANDONED:
            await self._hangup()
        return outcome

    async def _walk(self) -> Outcome:
        name = self.spec.start
        steps_taken = 0
        while True:  # every way out returns an outcome
            steps_taken += 1
            if steps_taken > self.s.max_steps:
                return await self._fallback(f"more than {self.s.max_steps} steps")
            self.step_name = name
            self.rings = 0
            step = self.spec.steps[name]
            kind = _KINDS.get(type(step)) or StepKind(schema.step_kind(step) or "")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            try:
                res = await self._step(name, step)
            except CallLost as exc:
                lost = _Result(StepResult.LOST, detail=_no_numbers(str(exc)))
                self._record(name, kind, lost, t0)
                raise
            except CallerHangup:
                self._record(name, kind, _Result(StepResult.ABANDONED, detail="caller hung up"), t0)
                raise
            except PbxLinkError as exc:
                # The link to the PBX failed, not the step: the flow's ``failed`` branch and
                # its fallback destination would need that same link (and might end in a
                # deliberate hangup), so the call goes to the PBX's own last resort.
                return self._link_failed(name, kind, exc, t0)
            except TelephonyError as exc:
                detail = _no_numbers(f"{type(exc).__name__}: {exc}")
                res = _Result(StepResult.ERROR, _failed_branch(step), detail=detail)
            except Exception as exc:  # a bug must not strand the caller
                log.exception("call=%s step=%s crashed", self.call.id, name)
                res = _Result(StepResult.ERROR, detail=f"internal error: {type(exc).__name__}")
            self._record(name, kind, res, t0)
            if res.caller_gone:
                raise CallerHangup(f"caller hung up during step '{name}'")
            if res.outcome is not None:
                if res.next is None:
                    # A deliberate hangup after someone was reached keeps what was reached.
                    if res.outcome.kind is OutcomeKind.HANGUP and self.reached is not None:
                        return self.reached
                    return res.outcome
                self.reached = res.outcome
            elif res.next is None:
                if res.ends:
                    return self.reached or Outcome(OutcomeKind.HANGUP, name, tier=self.tier)
                return await self._fallback(f"step '{name}' ended with {res.result}")
            name = res.next

    def _link_failed(self, name: str, kind: StepKind, exc: PbxLinkError, t0: float) -> Outcome:
        why = f"PBX link failed ({exc.fault}): {type(exc).__name__}: {exc}"
        failed = Outcome(OutcomeKind.FAILED, name, tier=self.tier, detail=why)
        # Someone already reached keeps the call's outcome (as when the PBX loses the call).
        res = _Result(StepResult.of_fault(exc.fault), detail=why)
        res.outcome = None if self.reached else failed
        self._record(name, kind, res, t0)
        log.warning("call=%s step=%s PBX link failed (%s)", self.call.id, name, exc.fault)
        return self.reached or failed

    async def _step(self, name: str, step: schema.Strict) -> _Result:
        match step:
            case schema.PlayStep():
                await self._answer()
                key = await self.call.play(step.play, barge_in=step.barge_in)
                if key:
                    return _Result(StepResult.INTERRUPTED, step.next, key=key)
                return _Result(StepResult.PLAYED, step.next)
            case schema.MenuStep():
                return await self._menu(step)
            case schema.ScheduleStep():
                return self._schedule(step)
            case schema.DialStep():
                return await self._dial(name, step, step.dial, OutcomeKind.ANSWERED)
            case schema.ForwardStep():
                return await self._dial(name, step, step.forward, OutcomeKind.FORWARDED)
            case schema.EscalateStep():
                return await self._escalate(name, step)
            case schema.CallbackStep():
                return await self._callback(step)
            case schema.VoicemailStep():
                await self._answer()
                box = f"box {step.voicemail.box}"
                problem = self.s.voicemail_problem()
                if problem is not None:
                    log.error(voicemail_refused(self.call.id, step.voicemail.box, problem))
                elif await self.call.voicemail(step.voicemail.box):
                    outcome = Outcome(OutcomeKind.VOICEMAIL, name, tier=self.tier)
                    return _Result(StepResult.LEFT, outcome=outcome, detail=box)
                return _Result(StepResult.FAILED, step.failed, detail=box)
            case schema.SetStep():
                for key_, value in step.set.items():
                    await self.call.set_variable(key_, value)
                return _Result(StepResult.SET, step.next, detail=", ".join(step.set))
            case schema.SurveyStep():
                return await self._survey(step)
            case schema.GotoStep():
                return _Result(StepResult.GOTO, step.goto)
            case schema.HangupStep():
                if step.hangup is not None and step.hangup.announce:
                    await self._answer()
                    await self.call.play(step.hangup.announce)
                outcome = Outcome(OutcomeKind.HANGUP, name, tier=self.tier)
                return _Result(StepResult.DONE, outcome=outcome)
            case _:
                raise AssertionError(f"unknown step type {type(step).__name__}")

    # -- step kinds ----------------------------------------------------------------------

    async def _menu(self, step: schema.MenuStep) -> _Result:
        spec = step.menu
        await self._answer()
        history: list[str] = []
        for attempt in range(1, spec.attempts + 1):
            digits = await self.call.collect(
                spec.prompt,
                max_digits=1,
                first_timeout=spec.timeout,
                inter_timeout=spec.timeout,
                barge_in=spec.barge_in,
            )
            key = digits[:1]
            if key and key in spec.options:
                history.append(f"pressed {key}")
                return _Result(
                    StepResult.PRESSED,
                    spec.options[key],
                    detail=_attempts(attempt, history),
                    key=key,
                    attempt=attempt,
                )
            if not key:
                history.append("no input")
                if spec.no_input:
                    await self.call.play([spec.no_input])
            else:
                history.append(f"invalid key {_printable(digits)}")
                if spec.invalid:
                    await self.call.play([spec.invalid])
        return _Result(
            StepResult.FAILED,
            step.failed,
            detail=_attempts(spec.attempts, history),
            attempt=spec.attempts,
        )

    def _schedule(self, step: schema.ScheduleStep) -> _Result:
        now = self.s.clock()
        cal = self.flow.calendars[step.schedule]
        override = self.s.overrides.get(f"{self.flow.name}/{step.schedule}", now)
        state = cal.state_at(now, override)
        if state.open:
            return _Result(StepResult.OPEN, step.open, detail=state.reason)
        if state.source is Source.HOLIDAY and step.holiday:
            return _Result(StepResult.HOLIDAY, step.holiday, detail=state.reason)
        return _Result(StepResult.CLOSED, step.closed, detail=state.reason)

    async def _dial(
        self,
        name: str,
        step: schema.DialStep | schema.ForwardStep,
        dest_name: str,
        on_answer: OutcomeKind,
    ) -> _Result:
        rung = await self._ring(name, dest_name, emergency=False)
        reached = _Result(
            StepResult.of_dial(rung.status),
            destination=dest_name,
            trunk=rung.trunk,
            dial_status=rung.status,
        )
        if rung.status is DialStatus.ANSWER:
            reached.result = StepResult.ANSWERED
            # The caller who ended the conversation is gone: nothing follows it (no survey).
            reached.next = None if rung.caller_hung_up else step.next
            if rung.detached:
                reached.detail = "the daemon stopped during the conversation: left to go on"
            elif rung.caller_hung_up and step.next is not None:
                reached.detail = "the caller ended the conversation"
            reached.outcome = Outcome(on_answer, name, dest_name, rung.trunk, self.tier)
        else:
            reached.next = _not_reached(step, rung.status)
        return reached

    async def _escalate(self, name: str, step: schema.EscalateStep) -> _Result:
        spec = step.escalate
        self.tier = spec.tier
        if spec.tier == 1:
            self.call.go_first()  # an emergency: held behind no other call
        if spec.announce and spec.tier != 1:
            await self._answer()
            await self.call.play(spec.announce)
        if spec.to is not None:
            # Tier 1: nothing stands between the caller and the emergency number; the
            # message plays while it rings.
            message = spec.announce if spec.tier == 1 else []
            rung = await self._ring(name, spec.to, emergency=spec.tier == 1, message=message)
            res = _Result(
                StepResult.of_dial(rung.status),
                step.failed,
                destination=spec.to,
                trunk=rung.trunk,
                dial_status=rung.status,
            )
            if rung.status is DialStatus.ANSWER:
                kind = OutcomeKind.EMERGENCY if spec.tier == 1 else OutcomeKind.ANSWERED
                res.result, res.next = StepResult.ANSWERED, None
                res.outcome = Outcome(kind, name, spec.to, rung.trunk, spec.tier)
                if rung.detached:
                    res.detail = "the daemon stopped during the conversation: left to go on"
            return res
        loop = asyncio.get_running_loop()
        deadline = None if spec.total_timeout is None else loop.time() + spec.total_timeout
        tried: list[str] = []
        people = spec.ring_in_turn or []
        if spec.oncall is not None:
            now = on_call(self.flow, spec.oncall, self.s.clock(), self.s.overrides)
            people = now.people
            tried.append(f"on call ({spec.oncall}, {now.shift}): {', '.join(people) or 'nobody'}")
        for person in people:
            limit = None
            if deadline is not None:
                limit = deadline - loop.time()
                if limit <= 0:
                    tried.append("total timeout")
                    break
            rung = await self._ring(name, person, emergency=False, confirm=spec, limit=limit)
            tried.append(f"{person}: {rung.status.lower()}")
            if rung.status is DialStatus.ANSWER:
                outcome = Outcome(OutcomeKind.ANSWERED, name, person, rung.trunk, spec.tier)
                return _Result(
                    StepResult.ACCEPTED,
                    outcome=outcome,
                    detail="; ".join(tried),
                    attempt=self.rings,
                    destination=person,
                    trunk=rung.trunk,
                    dial_status=rung.status,
                )
        return _Result(StepResult.NOBODY_ACCEPTED, step.failed, detail="; ".join(tried))

    async def _survey(self, step: schema.SurveyStep) -> _Result:
        """The caller rates the conversation just ended with one key, 1 .. ``scale``.  No
        rating (silence, a hangup, keys outside the scale twice) is the caller's answer,
        not an error; the call keeps the outcome of whom it reached."""
        spec = step.survey
        ends = step.next is None
        if self.reached is None or self.tier == 1:
            # The checker allows neither; a flow loaded unchecked must not ask anyway.
            why = "after an emergency tier" if self.tier == 1 else "no conversation to rate"
            return _Result(StepResult.NOT_ASKED, step.next, detail=why, ends=ends)
        history: list[str] = []
        score: int | None = None
        attempt = 0
        try:
            for attempt in (1, 2):  # a key outside the scale: asked once more
                digits = await self.call.collect(
                    spec.prompt,
                    max_digits=1,
                    first_timeout=spec.timeout,
                    inter_timeout=spec.timeout,
                )
                key = digits[:1]
                if not key:
                    history.append("no key")
                    break
                if key.isdigit() and 1 <= int(key) <= spec.scale:
                    score = int(key)
                    break
                history.append("key outside the scale")
                if attempt == 1 and spec.invalid:
                    await self.call.play([spec.invalid])
        except (CallLost, PbxLinkError):
            raise
        except CallerHangup:
            history.append("caller hung up")
            detail = "no answer to survey: " + ", ".join(history)
            return _Result(
                StepResult.NO_RATING,
                detail=detail,
                attempt=attempt,
                scale=spec.scale,
                caller_gone=True,
            )
        except TelephonyError as exc:
            # The conversation took place: a survey the PBX failed to carry out ends the
            # call (its record says why); it never sends the caller to the fallback.
            detail = _no_numbers(f"survey failed: {type(exc).__name__}: {exc}")
            return _Result(StepResult.ERROR, detail=detail, attempt=attempt, ends=True)
        if score is None:
            detail = "no answer to survey: " + ", ".join(history)
            return _Result(
                StepResult.NO_RATING,
                step.next,
                detail=detail,
                attempt=attempt,
                scale=spec.scale,
                ends=ends,
            )
        rated = _Result(
            StepResult.RATED,
            step.next,
            detail=f"scale 1-{spec.scale}",
            attempt=attempt,
            score=score,
            scale=spec.scale,
            ends=ends,
        )
        if spec.thanks:
            try:
                await self.call.play([spec.thanks])
            except CallerHangup:  # the rating is given: a hangup during the thanks keeps it
                rated.next, rated.caller_gone = None, True
            except TelephonyError as exc:  # so does a PBX failing to play the thanks
                rated.next, rated.ends = None, True
                rated.detail += _no_numbers(f"; thanks not played: {type(exc).__name__}")
        return rated

    async def _callback(self, step: schema.CallbackStep) -> _Result:
        spec = step.callback
        number = callable_number(self.call.caller)
        # The caller's number is a field of the call, never part of a step's prose.
        if number is None and step.failed is not None:
            why = "the caller's number cannot be called back"
            return _Result(StepResult.NO_CALLER_NUMBER, step.failed, detail=why)
        request = CallbackRequest(
            call_id=self.call.id,
            flow=self.flow.name,
            caller=number or self.call.caller,
            queue=spec.queue,
            priority=spec.priority,
            tier=self.tier,
            at=self.s.clock(),
        )
        self.s.callbacks.submit(request)
        if spec.announce:
            await self._answer()
            await self.call.play(spec.announce)
        detail = f"queue {spec.queue}, priority {spec.priority}"
        if number is None:
            detail += "; the caller's number cannot be called back"
        outcome = Outcome(OutcomeKind.CALLBACK, self.step_name, tier=self.tier, detail=spec.queue)
        return _Result(StepResult.QUEUED, outcome=outcome, detail=detail)

    # -- ringing destinations, with trunk failover ---------------------------------------

    async def _ring(
        self,
        step: str,
        dest_name: str,
        *,
        emergency: bool,
        confirm: schema.EscalateSpec | None = None,
        limit: float | None = None,
        message: Sequence[str] = (),
    ) -> _Rung:
        """Ring a destination (an outside number: over its route's trunks, in failover
        order); each try is an ``attempt`` record, an answer a ``CallAnswered`` event."""
        dest = self.spec.destinations[dest_name]
        ring = dest.ring if limit is None else max(0.0, min(dest.ring, limit))
        if dest.endpoint is not None:
            targets: list[tuple[str, str | None, float | None]] = [(dest.endpoint, None, None)]
            usable: set[str] = set()
        else:
            assert dest.number is not None and dest.route is not None
            route = self.spec.routes[dest.route]
            trunks = self.s.trunks.candidates(route, emergency=emergency)
            limit_setup = self.s.trunk_setup_timeout
            targets = [(f"PJSIP/{dest.number}@{t}", t, limit_setup) for t in trunks]
            # The trunks usable before any ring (an emergency rings even those already down):
            # only a trunk lost *during* its ring makes the ring-out the trunk's fault.
            usable = set(self.s.trunks.candidates(route, emergency=False) if emergency else trunks)
        status = DialStatus.CHANUNAVAIL  # no trunk to try
        for target, trunk, setup in targets:
            self.rings += 1
            started = self.s.clock()
            result = await self._ring_target(target, ring, confirm, setup, message)
            status = result.status
            if (
                status is DialStatus.NOANSWER
                and trunk is not None
                and trunk in usable
                and not self.s.trunks.candidates([trunk], emergency=False)
            ):
                # It rang out on a trunk that went down meanwhile (qualify lost it): the
                # ringing was the trunk's last word, not the callee's; try the next trunk.
                status = DialStatus.CHANUNAVAIL
            if trunk is not None:
                self.s.trunks.report(trunk, status)
            attempt = _Result(
                StepResult.of_dial(status),
                attempt=self.rings,
                destination=dest_name,
                trunk=trunk,
                dial_status=status,
            )
            self._record(step, StepKind.ATTEMPT, attempt)
            answered = _answered_at(started, result)
            if answered is not None:
                self.s.observer.call_answered(
                    CallAnswered(
                        self.call.id, self.flow.name, answered, step, dest_name, trunk, self.tier
                    )
                )
            if not status.trunk_fault or trunk is None:
                # Answered, or busy / no answer at the far end: the trunk did its job.
                return _Rung(status, trunk, result.caller_hung_up, result.detached)
        return _Rung(status)

    async def _ring_target(
        self,
        target: str,
        ring: float,
        confirm: schema.EscalateSpec | None,
        setup: float | None,
        message: Sequence[str] = (),
    ) -> DialResult:
        if confirm is None:
            return await self.call.dial(
                target, timeout=ring, setup_timeout=setup, while_ringing=message
            )
        return await self.call.dial_confirm(
            target,
            timeout=ring,
            confirm=confirm.confirm or "1",
            announce=confirm.callee_message,
            confirm_timeout=confirm.confirm_timeout,
            setup_timeout=setup,
        )

    async def _fallback(self, why: str, *, rescued: bool = False) -> Outcome:
        """The flow cannot carry on: ring the fallback destination so a human is reached.
        ``rescued``: a call a crash had left stranded; reached, it ends ``recovered``."""
        step = self.step_name or self.spec.start
        name = self.spec.fallback
        if name is None:
            none = _Result(StepResult.NONE, detail=f"{why}; no fallback destination")
            self._record(step, StepKind.FALLBACK, none)
            return Outcome(OutcomeKind.FAILED, step, tier=self.tier, detail=why)
        try:
            rung = await self._ring(step, name, emergency=False)
        except CallerHangup:
            raise
        except TelephonyError as exc:
            rung = _Rung(DialStatus.FAILED)
            why = f"{why}; fallback failed: {_no_numbers(str(exc))}"
        res = _Result(
            StepResult.of_dial(rung.status),
            detail=why,
            destination=name,
            trunk=rung.trunk,
            dial_status=rung.status,
        )
        if rung.status is DialStatus.ANSWER:
            kind = OutcomeKind.FORWARDED if rung.trunk else OutcomeKind.ANSWERED
            if rescued:
                kind = OutcomeKind.RECOVERED
            res.outcome = Outcome(kind, step, name, rung.trunk, self.tier, f"fallback: {why}")
        else:
            res.outcome = Outcome(OutcomeKind.FAILED, step, name, None, self.tier, why)
        self._record(step, StepKind.FALLBACK, res)
        return res.outcome

    # -- bookkeeping ---------------------------------------------------------------------

    async def _answer(self) -> None:
        if not self.answered:
            await self.call.answer()
            self.answered = True

    async def _last_resort(self) -> None:
        try:
            await self.call.last_resort()
        except Exception:  # the call is over for us either way
            log.exception("call=%s last resort failed", self.call.id)

    async def _hangup(self) -> None:
        try:
            await self.call.hangup()
        except CallerHangup:
            pass
        except TelephonyError as exc:
            log.info("call=%s hangup: %s", self.call.id, exc)

    def _record(self, step: str, kind: StepKind, res: _Result, t0: float | None = None) -> None:
        """Report a step (``t0``: when it began, on the loop's clock) or an attempt."""
        self.seq += 1
        duration = 0.0 if t0 is None else asyncio.get_running_loop().time() - t0
        rec = StepRecord(
            call_id=self.call.id,
            flow=self.flow.name,
            seq=self.seq,
            step=step,
            kind=kind,
            result=res.result,
            next=res.next,
            at=self.s.clock(),
            duration=duration,
            detail=res.detail,
            key=res.key,
            attempt=res.attempt,
            destination=res.destination,
            trunk=res.trunk,
            tier=self.tier,
            dial_status=res.dial_status,
            outcome=None if res.outcome is None else res.outcome.kind,
            score=res.score,
            scale=res.scale,
        )
        # Neither the key chosen (a health choice) nor the detail goes to the log.  At DEBUG:
        # the call log holds every step; at INFO the log says each call's start and end (two
        # lines a call, not one a step: written from the event loop, they were 4 % of the
        # daemon's CPU at 100 calls/s, and a step's next name can tell a triage branch).
        log.debug(
            "call=%s flow=%s step=%s kind=%s result=%s next=%s",
            rec.call_id,
            rec.flow,
            step,
            kind,
            res.result,
            res.next or "-",
        )
        self.s.observer.step(rec)

    def _end(self, outcome: Outcome) -> None:
        log.info(
            "call=%s flow=%s event=end outcome=%s step=%s destination=%s trunk=%s tier=%s",
            self.call.id,
            self.flow.name,
            outcome.kind,
            outcome.step,
            outcome.destination or "-",
            outcome.trunk or "-",
            outcome.tier or "-",
        )
        self.s.observer.call_ended(self.info, outcome, self.s.clock())


def _failed_branch(step: schema.Strict) -> str | None:
    match step:
        case (
            schema.MenuStep(failed=failed)
            | schema.DialStep(failed=failed)
            | schema.ForwardStep(failed=failed)
            | schema.EscalateStep(failed=failed)
            | schema.CallbackStep(failed=failed)
            | schema.VoicemailStep(failed=failed)
        ):
            return failed
        case _:
            return None


def _not_reached(step: schema.DialStep | schema.ForwardStep, status: DialStatus) -> str | None:
    """The branch for a destination not reached: the most specific one the flow gives."""
    if status is DialStatus.BUSY:
        return step.busy or step.no_answer or step.failed
    if status is DialStatus.NOANSWER:
        return step.no_answer or step.failed
    return step.failed or step.no_answer


def _attempts(n: int, history: list[str]) -> str:
    return f"attempt {n}: " + ", ".join(history)


def _printable(digits: str) -> str:
    return repr("".join(c for c in digits if c.isprintable())[:8])


__all__ = ["Engine", "mask"]
