"""How caller numbers are kept: in clear, or pseudonymised with a keyed HMAC (GDPR).

``[privacy] caller_numbers = "pseudonymised"`` stores ``hmac:<key id>:<HMAC-SHA256(key,
number)>`` instead of the number.  The number is first written in E.164 (``06 12 34 56 78``,
``0033612345678`` and ``+33612345678`` are one patient, one pseudonym), and the key id (the
first 8 hex digits of the key's SHA-256) says which key made it, so that a new key can be
brought in while the old pseudonyms stay recognisable (``old_key_files``).

The key comes from ``key_file`` (never from the settings file): a
plain hash of a phone number is no protection (there are only 10^10 French numbers to try),
a keyed HMAC is, as long as the key stays secret.  The same number always gives the same
value, so calls from one patient can still be counted and found (``callflow export``
computes the HMAC of the number it is given).  Losing the key makes the stored values
unlinkable to anyone: keep it backed up with the database, and never change it silently.

Callback requests keep the number in clear: calling the patient back is their purpose.
``purge`` erases it ``callback_erase_days`` after the callback was done or cancelled, and
from every request older than the retention period.  The key file must be readable by its
owner only.
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
import stat
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


def e164(number: str, country: str = "33") -> str:
    """``number`` in E.164 where its form says which: a national 10-digit French number
    (``0612345678``) or an international prefix (``0033…``, ``+33…``) becomes
    ``+33612345678``; a short or withheld number stays as it is."""
    clean = normalise(number)
    if clean.startswith("+") and clean[1:].isdigit():
        return clean
    if clean.startswith("00") and clean[2:].isdigit() and len(clean) > 4:
        return "+" + clean[2:]
    if len(clean) == 10 and clean.startswith("0") and clean.isdigit():
        return f"+{country}{clean[1:]}"
    return clean


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class CallerPrivacy:
    key: bytes | None = None  # None: numbers are stored in clear
    old_keys: tuple[bytes, ...] = ()  # keys of earlier pseudonyms, still recognised

    @property
    def pseudonymised(self) -> bool:
        return self.key is not None

    def protect(self, number: str) -> str:
        """What the call log stores for ``number``."""
        if self.key is None:
            return normalise(number)
        return f"{PREFIX}{key_id(self.key)}:{_hmac(self.key, e164(number))}"

    def stored_forms(self, number: str) -> set[str]:
        """Every value the call log may hold for ``number``: its clear form, and its
        pseudonym under the current and the old keys, including the first scheme's
        (``hmac:<digest>`` of the number as dialled, without key id nor E.164)."""
        forms = {normalise(number)}
        for key in (self.key, *self.old_keys):
            if key is not None:
                forms.add(f"{PREFIX}{key_id(key)}:{_hmac(key, e164(number))}")
                forms.add(PREFIX + _hmac(key, normalise(number)))
        return forms

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
        old = tuple(read_key(settings.resolve(f)) for f in p.old_key_files)
        return cls(read_key(settings.resolve(p.key_file)), old)


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))


def read_key(path: Path) -> bytes:
    try:
        st = path.stat()
        key = path.read_bytes().strip()
    except OSError as exc:
        raise SettingsError(
            f"[privacy] key_file: cannot read {path}: {exc.strerror}; callers cannot be "
            "pseudonymised without it"
        ) from None
    # Anyone who can read the key can re-identify every caller: refuse a key others may
    # read.  (A docker secret belongs to root: its owner is not us, its mode not ours.)
    if st.st_uid == os.getuid() and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"[privacy] key_file: {path} is readable by others: chmod 600 it")
    if len(key) < MIN_KEY_BYTES:
        raise SettingsError(
            f"[privacy] key_file: {path} holds {len(key)} bytes; the key must have at least "
            f"{MIN_KEY_BYTES} (32 random bytes recommended)"
        )
    return key


__all__ = ["PREFIX", "CallerPrivacy", "e164", "key_id", "normalise", "read_key"]
