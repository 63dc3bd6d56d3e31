"""The live flow set: the flows the daemon runs now, and their reload without dropping calls."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import FlowError, UserError
from ..schedule import FeedBook
from .registry import FlowSet, LoadedFlow, load_flows

log = logging.getLogger("callflow.flows")

#: A reload that takes longer is refused (the loader's limits make this a safety net).
RELOAD_TIMEOUT = 30.0


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    flows: list[str]
    errors: list[str]


class LiveFlows:
    """Holds the current ``FlowSet``.  A reload swaps it whole or not at all; calls keep
    the ``LoadedFlow`` they started with, so they finish on that version."""

    def __init__(
        self,
        directory: Path,
        default: str | None,
        feeds: FeedBook | None = None,
        *,
        language: str = "en",
    ) -> None:
        self.directory = directory
        self.default = default
        self.feeds = feeds  # the iCal feeds read so far, shared by every version's calendars
        self.language = language  # of holiday names, which the page and the API show
        self.current = self._load()
        self.generation = 1
        self._reloading = asyncio.Lock()

    def _load(self) -> FlowSet:
        flows = load_flows([self.directory], self.feeds, language=self.language)
        if self.default is not None and self.default not in flows.flows:
            raise UserError(
                f"flows.default = '{self.default}' is not a flow in {self.directory} "
                f"(flows: {', '.join(sorted(flows.flows))})"
            )
        return flows

    def reload(self) -> ReloadResult:
        """Reload now, on the caller's thread (the CLI; the daemon uses ``reload_async``)."""
        try:
            return self._swap(self._load())
        except (FlowError, UserError) as exc:
            return self._refused(exc)

    async def reload_async(self, timeout: float = RELOAD_TIMEOUT) -> ReloadResult:
        """Reload with the parsing off the event loop, so that calls keep being answered
        while a large (or hostile) file is read; one reload at a time.  The worker thread
        lives only for the parse; after ``timeout`` its result is ignored."""
        async with self._reloading:
            try:
                new = await asyncio.wait_for(asyncio.to_thread(self._load), timeout)
            except (FlowError, UserError) as exc:
                return self._refused(exc)
            except TimeoutError:
                msg = f"{self.directory}: reading the flows took more than {timeout:g} s"
                return self._refused(UserError(msg))
            return self._swap(new)

    def _refused(self, exc: FlowError | UserError) -> ReloadResult:
        if isinstance(exc, FlowError):
            for d in exc.diagnostics:
                log.error("reload refused: %s", d)
            return ReloadResult(
                False, sorted(self.current.flows), [str(d) for d in exc.diagnostics]
            )
        log.error("reload refused: %s", exc)
        return ReloadResult(False, sorted(self.current.flows), [str(exc)])

    def _swap(self, new: FlowSet) -> ReloadResult:
        self.current = new
        self.generation += 1
        names = sorted(new.flows)
        log.info("flows reloaded (generation %d): %s", self.generation, ", ".join(names))
        return ReloadResult(True, names, [])

    def for_number(self, dialed: str) -> LoadedFlow | None:
        """The flow claiming ``dialed``, else the default flow (None if there is none)."""
        flow = self.current.for_number(dialed)
        if flow is None and self.default is not None:
            flow = self.current.flows.get(self.default)
        if flow is None and len(self.current.flows) == 1:
            flow = next(iter(self.current.flows.values()))
        return flow
