"""The call service owns its background tasks: its exit (the graceful stop) cancels and
awaits them, a recovery in progress and a recovered conversation's clean-up included."""

from __future__ import annotations

import asyncio
from typing import Any

from callflow.ari.channels import ChannelRegistry
from callflow.ari.client import EVENT_CONNECTED
from callflow.ari.service import BridgeWatch, CallService


class StuckAri:
    """An ARI client whose every request hangs (Asterisk gone quiet); records what ended."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.cancelled: list[str] = []

    async def _hang(self, what: str) -> Any:
        self.asked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(what)
            raise

    async def filter_events(self, types: object) -> bool:
        return True  # set at each connection; what hangs here is the recovery

    async def list_modules(self) -> list[dict[str, Any]]:
        return [{"name": "app_voicemail.so", "status": "Running"}]  # read at each connection

    async def channels_in_app(self) -> list[str]:
        return await self._hang("channels_in_app")  # type: ignore[no-any-return]

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        await self._hang(f"hangup {channel_id}")


def others() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_leaving_the_service_cancels_and_awaits_a_recovery_in_progress() -> None:
    ari = StuckAri()
    before = others()
    async with CallService(ari, engine=None, flows=None, stop_grace=0.1) as service:  # type: ignore[arg-type]
        service.dispatch({"type": EVENT_CONNECTED})  # starts a recovery: lists channels
        await asyncio.wait_for(ari.asked.wait(), 5)
    assert ari.cancelled == ["channels_in_app"]
    assert others() == before and not service.accepting


async def test_a_recovered_conversations_clean_up_is_owned_by_the_service() -> None:
    ari = StuckAri()
    registry = ChannelRegistry()
    before = others()
    service = CallService(ari, None, None, registry=registry)  # type: ignore[arg-type]
    watch = BridgeWatch(ari, registry, "b1", ["c1", "c2"], service._background)  # type: ignore[arg-type]
    service.dispatch({"type": "StasisEnd", "channel": {"id": "c1"}})  # one side left
    await asyncio.wait_for(ari.asked.wait(), 5)
    watch.on_event({"type": "ChannelDestroyed", "channel": {"id": "c1"}})  # ends once only
    await service.stop(0.1)
    assert ari.cancelled == ["hangup c1"]
    assert others() == before
