"""Calendar overrides that survive a restart.

"Closed until Monday 8:00", set from the admin API, must not be forgotten because the daemon
restarted in between: every change is written (atomically) to a JSON file in the state
folder, read back at start; expired overrides are dropped on the way.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path

from .schedule import Override, OverrideStore

log = logging.getLogger("callflow.overrides")

OVERRIDES_FILE = "overrides.json"


class PersistentOverrides(OverrideStore):
    def __init__(self, path: Path, now: datetime) -> None:
        super().__init__()
        self.path = path
        for key, override in _read(path).items():
            if now < override.until:
                super().set(key, override)
        if self._items:
            log.info("calendar overrides restored: %s", ", ".join(sorted(self._items)))

    def set(self, calendar_key: str, override: Override) -> None:
        super().set(calendar_key, override)
        self._save()

    def clear(self, key: str) -> None:
        super().clear(key)
        self._save()

    def _save(self) -> None:
        data = {
            key: {
                "open": o.open,
                "until": o.until.isoformat(),
                "label": o.label,
                "set_by": o.set_by,
            }
            for key, o in self._items.items()
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".overrides-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # the override still applies now; it is only not durable
            log.error("cannot save calendar overrides to %s: %s", self.path, exc)


def _read(path: Path) -> dict[str, Override]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("calendar overrides in %s unreadable (%s): none restored", path, exc)
        return {}
    out: dict[str, Override] = {}
    for key, item in raw.items() if isinstance(raw, dict) else []:
        try:
            out[str(key)] = Override(
                open=bool(item["open"]),
                until=datetime.fromisoformat(item["until"]),
                label=item.get("label"),
                set_by=item.get("set_by"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.error("calendar override %r in %s skipped: %s", key, path, exc)
    return out
