"""How caller numbers are kept: in clear, or pseudonymised with a keyed HMAC (GDPR).

``[privacy] caller_numbers = "pseudonymised"`` stores ``hmac:<HMAC-SHA256(key, number)>``
instead of the number.  The key comes from ``key_file`` (never from the settings file): a
plain hash of a phone number is no protection (there are only 10^10 French numbers to try),
a keyed HMAC is, as long as the key stays secret.  The same number always gives the same
value, so calls from one patient can still be counted and found (``callflow export``
computes the HMAC of the number it is given).  Losing the key makes the stored values
unlinkable to anyone: keep it backed up with the database, and never change it silently.

Callback requests keep the number in clear in the database: calling the patient back is
their purpose.  ``purge`` anonymises them once they are older than the retention period.
In pseudonymised mode the number is *sealed* on its way through the spool (a plain file):
encrypted with a key derived from the HMAC key (HMAC-SHA256 in counter mode, random
nonce, encrypt-then-MAC; the standard library has no AES) and opened only when written
to the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SettingsError
from ..settings import Settings

PREFIX = "hmac:"
SEALED = "sealed:"
_NONCE, _TAG = 16, 16
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

    def seal(self, number: str) -> str:
        """``number`` encrypted for the spool (unchanged in clear mode)."""
        if self.key is None:
            return number
        nonce = os.urandom(_NONCE)
        data = number.encode("utf-8")
        body = nonce + _xor(data, self._stream(nonce, len(data)))
        tag = hmac.new(self._subkey(b"mac"), body, hashlib.sha256).digest()[:_TAG]
        return SEALED + base64.urlsafe_b64encode(body + tag).decode("ascii")

    def unseal(self, value: str) -> str:
        """The number ``seal`` sealed; a value that is not sealed is returned as is.
        ``ValueError`` when it was sealed with another key or altered."""
        if not value.startswith(SEALED):
            return value
        if self.key is None:
            raise ValueError("a sealed caller number, but no [privacy] key_file to open it")
        raw = base64.urlsafe_b64decode(value[len(SEALED) :])
        body, tag = raw[:-_TAG], raw[-_TAG:]
        good = hmac.new(self._subkey(b"mac"), body, hashlib.sha256).digest()[:_TAG]
        if len(raw) < _NONCE + _TAG or not hmac.compare_digest(tag, good):
            raise ValueError("a sealed caller number does not open with this key")
        nonce, data = body[:_NONCE], body[_NONCE:]
        return _xor(data, self._stream(nonce, len(data))).decode("utf-8")

    def _subkey(self, purpose: bytes) -> bytes:
        assert self.key is not None
        return hmac.new(self.key, b"callflow spool seal " + purpose, hashlib.sha256).digest()

    def _stream(self, nonce: bytes, n: int) -> bytes:
        key, out, i = self._subkey(b"enc"), b"", 0
        while len(out) < n:
            out += hmac.new(key, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest()
            i += 1
        return out[:n]

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


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))


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
