"""Overload shedding, end to end below the network: the call service on a real ARI client
over the fake Asterisk, the engine, and the call log on a real database.

A call that arrives while the daemon is behind goes straight to the dialplan fallback and
is logged ``shed`` exactly once, with its reason; a call already running goes on; a call of
a ``never_shed`` flow (the emergency line) is served."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callflow.ari.channels import ChannelRegistry
from callflow.ari.overload import Budgets, Reason, Shedder
from callflow.ari.service import CallService
from callflow.flow.engine import Engine
from callflow.flow.live import LiveFlows
from callflow.flow.services import Services
from callflow.store.models import Call, CallStep
from callflow.store.recorder import Recorder
from tests.support.fake_asterisk import FakeAsterisk, client_for
from tests.support.flows import write_flow
from tests.support.polling import wait_until

MAIN = """
version: 1
flow: main
numbers: ["100"]
timezone: Europe/Paris
start: hello
steps:
  hello: {play: [custom/hello], next: bye}
  bye: {hangup: {}}
"""
URGENT = MAIN.replace("flow: main", "flow: urgences\nnever_shed: true").replace('"100"', '"200"')


class Signals:
    lag = 0.0
    in_flight = 0


def arrive(pbx: FakeAsterisk, service: CallService, call_id: str, dialed: str) -> None:
    channel = pbx.add_caller(call_id)
    service.dispatch({"type": "StasisStart", "channel": channel, "args": [dialed]})


@pytest.mark.parametrize("dialplan", ["shipped", "older"])
async def test_a_shed_call_goes_to_the_dialplan_and_is_logged_shed_once(
    engine: AsyncEngine, tmp_path: Path, dialplan: str, caplog: pytest.LogCaptureFixture
) -> None:
    flows_dir = tmp_path / "flows"
    write_flow(flows_dir, MAIN, "main.yaml")
    write_flow(flows_dir, URGENT, "urgences.yaml")
    rec = Recorder(engine, tmp_path / "spool", flush_interval=0.02, retry_min=0.01)
    writer = asyncio.create_task(rec.run())
    signals = Signals()
    shedder = Shedder(
        Budgets(max_loop_lag=0.25, hold=0.0),
        in_flight=lambda: signals.in_flight,
        loop_lag=lambda: signals.lag,
        clock=time.monotonic,
    )
    registry = ChannelRegistry()
    events: list[CallService] = []
    pbx = FakeAsterisk(sink=lambda e: events[0].dispatch(e), play_time=0.3)
    if dialplan == "older":  # an extensions_callflow.conf from before the "shed" label
        pbx.labels.clear()
    latencies: list[float] = []
    service = CallService(
        client_for(pbx),
        Engine(Services(callbacks=rec, observer=rec)),
        LiveFlows(flows_dir, None),
        registry=registry,
        shedder=shedder,
        on_answered=latencies.append,
    )
    events.append(service)

    arrive(pbx, service, "running", "100")  # before the overload: it is run
    await wait_until(lambda: bool(pbx.sent("POST", "/channels/running/play")))
    signals.lag = 1.0  # the loop falls behind
    arrive(pbx, service, "late", "100")  # shed
    arrive(pbx, service, "emergency", "200")  # never shed
    await wait_until(lambda: not service.calls and not len(service._background), 10)
    arrive(pbx, service, "later", "100")  # shed too, once the first shed call is handed off
    await wait_until(lambda: not len(service._background), 10)
    await service.stop(1.0)
    await rec.close()
    await writer

    async with engine.connect() as conn:
        rows = {r.id: r for r in (await conn.execute(select(Call))).all()}
        steps = dict(
            (
                await conn.execute(
                    select(CallStep.call_id, func.count()).group_by(CallStep.call_id)
                )
            ).all()
        )
    assert set(rows) == {"running", "late", "later", "emergency"}  # one row each: logged once
    late = rows["late"]
    assert late.outcome == "shed" and late.ended is not None
    assert late.detail == "overload (loop_lag): event-loop lag 1.000 s, budget 0.25 s"
    assert "late" not in steps  # not one step of the flow ran
    # It went straight back to the dialplan fallback, unanswered by the daemon: at the
    # label where the dialplan answers it first, or, in a dialplan without that label
    # (Asterisk refuses the label with 404), at the fallback's start.
    shed_entry = {"context": "callflow-fallback", "extension": "s", "label": "shed"}
    start = {"context": "callflow-fallback", "extension": "s", "priority": "1"}
    continues = [r.params for r in pbx.sent("POST", "/channels/late/continue")]
    then = [r.params for r in pbx.sent("POST", "/channels/later/continue")]
    no_label = "the dialplan has no label callflow-fallback,s,shed"
    if dialplan == "shipped":
        assert continues == then == [shed_entry]
        assert no_label not in caplog.text
    else:
        # Found missing once, with one warning: the next shed call is not refused again.
        assert (continues, then) == ([shed_entry, start], [start])
        assert caplog.text.count(no_label) == 1
    assert not pbx.sent("POST", "/channels/late/answer")
    # The call already running and the emergency line's call were carried to their end.
    assert rows["running"].outcome == rows["emergency"].outcome == "hangup"
    assert steps["running"] == steps["emergency"] == 2
    assert shedder.shed[Reason.LOOP_LAG] == 2 and sum(shedder.shed.values()) == 2
    assert rows["later"].outcome == "shed"
    assert len(latencies) == 2  # both served calls were answered, and measured
