"""Serving the admin application inside the daemon's event loop."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web

from ..errors import SettingsError

log = logging.getLogger("callflow.api")


class AdminServer:
    """``await start()`` binds ``host:port`` (port 0: any free one, see ``port``) and serves
    ``app`` in the running loop; ``await close()`` stops it (requests in progress finish,
    up to ``shutdown_timeout`` seconds).  ``async with`` does both."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        shutdown_timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self._port = port
        self._tls = tls
        self._runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        """The port bound (the one asked, or the one chosen for 0)."""
        server = self._runner.server
        if self._site is not None and server is not None:
            for addr in self._runner.addresses:
                if isinstance(addr, tuple) and len(addr) >= 2:
                    return int(addr[1])
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port, ssl_context=self._tls)
        try:
            await self._site.start()
        except OSError:
            await self._runner.cleanup()
            self._site = None
            raise
        log.info("admin API on %s (page %s/page/)", self.url, self.url)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._site is not None:
            self._site = None
            await self._runner.cleanup()


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context of TLS 1.2 or newer; ``SettingsError`` when the files do not load."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"[http] tls_cert {cert} / tls_key {key}: {exc}") from None
    return ctx


__all__ = ["AdminServer", "tls_context"]
