"""What Asterisk's module list (ARI ``GET /asterisk/modules``) says of its voicemail.

A module can run without its applications.  Debian's ``asterisk-modules`` ships
``app_voicemail_odbc.so`` beside ``app_voicemail.so``; under ``autoload`` both load, the
second declines, and its unload unregisters ``VoiceMail()`` by name, the first's too.  The
module list then shows one voicemail module running and one not: the sign read here, at
each connection, so that a voicemail that would hang up on every caller is told before a
caller meets it (each voicemail step also asks for its mailbox: ``mailbox_probe``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: app_voicemail and its storage variants: one of them, alone, gives VoiceMail().
VOICEMAIL_MODULES = frozenset({"app_voicemail", "app_voicemail_odbc", "app_voicemail_imap"})


@dataclass(frozen=True)
class VoicemailModules:
    """The voicemail modules Asterisk lists: running, and tried but not running."""

    running: tuple[str, ...]
    declined: tuple[str, ...]

    @property
    def problem(self) -> str | None:
        """Why Asterisk has no working ``VoiceMail()``, with the fix; None: it has one."""
        if not self.running:
            return (
                "no voicemail module runs (app_voicemail.so): VoiceMail() is missing, so "
                "the fallback's voicemail and the flows' voicemail steps take no message"
            )
        if self.declined:
            # Under autoload, modules load in directory order: either may be the one that
            # declined.  The fix is the same: one voicemail module only.
            names = ", ".join(f"{m}.so" for m in self.declined)
            running = ", ".join(f"{m}.so" for m in self.running)
            return (
                f"{names} failed to load beside {running} and unregistered VoiceMail() as "
                "it unloaded: every voicemail hangs up on the caller. Load one voicemail "
                "module only, then restart Asterisk: for messages in files (callflow's "
                "voicemail), 'noload => app_voicemail_odbc.so' and 'noload => "
                "app_voicemail_imap.so' in modules.conf (modules_callflow.conf has them); "
                "for messages in ODBC or IMAP, 'noload => app_voicemail.so' and the other "
                "variant"
            )
        return None


def voicemail_modules(modules: Iterable[Mapping[str, Any]]) -> VoicemailModules:
    """The voicemail modules of ``GET /asterisk/modules``'s answer."""
    running: list[str] = []
    declined: list[str] = []
    for m in modules:
        name = str(m.get("name", "")).removesuffix(".so")
        if name in VOICEMAIL_MODULES:
            (running if m.get("status") == "Running" else declined).append(name)
    return VoicemailModules(tuple(sorted(running)), tuple(sorted(declined)))
