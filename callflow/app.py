"""The composition root: builds every part of the daemon, wires them, owns tasks and signals.

Nothing else in callflow reads settings, secrets, the clock or signals; each part gets what
it needs from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Mapping
from typing import Any

from .ari.client import AriClient, AriConfig
from .ari.service import CallService
from .flow.engine import Engine
from .flow.services import Services
from .flows import FlowStore
from .settings import Settings, read_secret

log = logging.getLogger("callflow")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.daemon.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.daemon.log_level.upper())
    # aiohttp's access-level chatter is not ours to show at INFO.
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


class Daemon:
    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        ari = settings.ari
        password = read_secret(
            ari.password_env, ari.password_file, "[ari] password", settings.base_dir, env
        )
        self.flows = FlowStore(settings.resolve(settings.flows.dir), settings.flows.default)
        self.ari_config = AriConfig(
            url=ari.url,
            app=ari.app,
            username=ari.username,
            password=password,
            request_timeout=ari.request_timeout,
            pool_size=ari.pool_size,
        )
        self.services = Services()
        self.engine = Engine(self.services)
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        result = self.flows.reload()
        if result.ok:
            log.info("reload: %s", ", ".join(result.flows))
        else:
            log.error("reload refused, still running: %s", ", ".join(result.flows))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.reload),
        ):
            loop.add_signal_handler(sig, handler)
        names = ", ".join(sorted(self.flows.current.flows))
        log.info(
            "callflow starting: flows %s; ARI %s app %s",
            names,
            self.ari_config.url,
            self.ari_config.app,
        )
        async with AriClient(self.ari_config) as client:
            service = CallService(
                client, self.engine, self.flows, sounds_prefix=self.settings.flows.sounds_prefix
            )
            pump = asyncio.create_task(self._pump(client, service), name="ari-events")
            stop = asyncio.create_task(self._stop.wait(), name="stop")
            await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
            log.info("callflow stopping")
            await service.stop(self.settings.daemon.stop_grace)
            await client.close()
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
            await pump  # re-raises a failure of the event pump
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("callflow stopped")
        return 0

    @staticmethod
    async def _pump(client: AriClient, service: CallService) -> None:
        async for event in client.events():
            service.dispatch(event)
