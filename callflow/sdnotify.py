"""systemd's notify protocol (``Type=notify``), in a few lines instead of a dependency.

A part of the daemon, entered last: when it is entered every other part is up, so it says
``READY=1``; when it is left (first) it says ``STOPPING=1``; meanwhile, when systemd asks
for a watchdog (``WATCHDOG_USEC``), it says ``WATCHDOG=1`` at half that interval from a task
on the event loop, so a loop that hangs stops the pings and systemd restarts the daemon.
Outside systemd (no ``NOTIFY_SOCKET``) it does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Self

from .tasks import Tasks

log = logging.getLogger("callflow.sdnotify")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: a leading NUL byte on the wire.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog = int(usec) / 1_000_000
        self._tasks = Tasks("systemd notify", log)

    def notify(self, message: str) -> bool:
        """Send one message; False (logged) when it cannot go.  Never raises: systemd's
        bookkeeping must not stop calls."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)
                s.sendto(message.encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd (%s): %s", message, exc)
            return False
        return True

    async def _ping(self, interval: float) -> None:
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        self.notify("READY=1\nSTATUS=taking calls")
        if self.watchdog is not None and self.address:
            self._tasks.spawn(self._ping(self.watchdog / 2), "watchdog")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.notify("STOPPING=1\nSTATUS=stopping: calls in progress finish")
        await self._tasks.__aexit__(exc_type, exc, tb)


__all__ = ["Notifier"]
