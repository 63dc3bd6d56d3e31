"""The live flow set: the flows the daemon runs now, and their reload without dropping calls."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import FlowError, UserError
from ..schedule import FeedBook
from .registry import FlowSet, LoadedFlow, load_flows

log = logging.getLogger("callflow.flows")


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    flows: list[str]
    errors: list[str]


class LiveFlows:
    """Holds the current ``FlowSet``.  A reload swaps it whole or not at all; calls keep
    the ``LoadedFlow`` they started with, so they finish on that version."""

    def __init__(self, directory: Path, default: str | None, feeds: FeedBook | None = None) -> None:
        self.directory = directory
        self.default = default
        self.feeds = feeds  # the iCal feeds read so far, shared by every version's calendars
        self.current = self._load()
        self.generation = 1

    def _load(self) -> FlowSet:
        flows = load_flows([self.directory], self.feeds)
        if self.default is not None and self.default not in flows.flows:
            raise UserError(
                f"flows.default = '{self.default}' is not a flow in {self.directory} "
                f"(flows: {', '.join(sorted(flows.flows))})"
            )
        return flows

    def reload(self) -> ReloadResult:
        try:
            new = self._load()
        except FlowError as exc:
            for d in exc.diagnostics:
                log.error("reload refused: %s", d)
            return ReloadResult(
                False, sorted(self.current.flows), [str(d) for d in exc.diagnostics]
            )
        except UserError as exc:
            log.error("reload refused: %s", exc)
            return ReloadResult(False, sorted(self.current.flows), [str(exc)])
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
