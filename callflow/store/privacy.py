"""How caller numbers are kept: in clear, or pseudonymised with a keyed HMAC (GDPR).

``[privacy] caller_numbers = "pseudonymised"`` stores ``hmac:<HMAC-SHA256(key, number)>``
instead of the number.  The key comes from ``key_file`` (never from the settings file): a
plain hash of a phone number is no protection (there are only 10^10 French numbers to try),
a keyed HMAC is, as long as the key stays secret.  The same number always gives the same
value, so calls from one patient can still be counted and found (``callflow export``
computes the HMAC of the number it is given).  Losing the key makes the stored values
unlinkable to anyone: keep it backed up with the database, and never change it silently.

Callback requests keep the number in clear: calling the patient back is their purpose.
``purge`` anonymises them once they are older than the retention period.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SettingsError
from ..settings import Settings

PREFIX = "hmac:"
MIN_KEY_BYTES = 16
_FORMATTING = re.compile(r"[\s.()/-]")


def normalise(number: str) -> str:
    """A caller number without formatting: ``06 12-34.56 78`` → ``0612345678``."""
    return _FORMATTING.sub("", number or "")


@dataclass(frozen=True)
class CallerPrivacy:
    key: bytes | None = None  # None: numbers are stored in clear

    @property
    def pseudonymised(self) -> bool:
        return self.key is not None

    def protect(self, number: str) -> str:
        """What the call log stores for ``number``."""
        clean = normalise(number)
        if self.key is None:
            return clean
        digest = hmac.new(self.key, clean.encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest

    @classmethod
    def from_settings(cls, settings: Settings) -> CallerPrivacy:
        p = settings.privacy
        if p.caller_numbers == "clear":
            return cls(None)
        if not p.key_file:
            raise SettingsError(
                "[privacy] caller_numbers = 'pseudonymised' needs key_file: a file holding a "
                "secret key (e.g. `head -c 32 /dev/urandom > key; chmod 600 key`)"
            )
        return cls(read_key(settings.resolve(p.key_file)))


def read_key(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise SettingsError(
            f"[privacy] key_file: cannot read {path}: {exc.strerror}; callers cannot be "
            "pseudonymised without it"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise SettingsError(
            f"[privacy] key_file: {path} holds {len(key)} bytes; the key must have at least "
            f"{MIN_KEY_BYTES} (32 random bytes recommended)"
        )
    return key


__all__ = ["PREFIX", "CallerPrivacy", "normalise", "read_key"]
