"""``callflow check --config FILE``: the settings as the daemon would use them, before a
restart finds out.  Every problem is collected, so that one run lists them all."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from .errors import UserError
from .settings import Settings, read_secret


def settings_problems(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    """What would stop the daemon, or make it write where it should not; empty when none.

    Secrets held in the environment are not required here (the daemon's environment is not
    the admin's shell), but a secret *file* that is named must be readable."""
    from .api import load_accounts, load_tokens
    from .store import db
    from .store.privacy import CallerPrivacy

    problems: list[str] = []

    def attempt(check: Callable[[], object]) -> None:
        try:
            check()
        except UserError as exc:
            problems.append(str(exc))

    attempt(lambda: db.database_url(settings, env))
    attempt(lambda: CallerPrivacy.from_settings(settings))
    if settings.http.enabled and settings.http.token_file:
        attempt(lambda: load_tokens(settings.resolve(settings.http.token_file or "")))
    if settings.http.enabled and settings.http.accounts_file:
        attempt(lambda: load_accounts(settings.resolve(settings.http.accounts_file or "")))
    secret_files = {
        "[ari] password": settings.ari.password_file,
        "[ami] secret": settings.ami.secret_file if settings.ami.enabled else None,
    }
    for what, file in secret_files.items():
        if file:
            attempt(partial(read_secret, None, file, what, settings.base_dir, env))
    state = settings.state_dir
    if state.exists() and not state.is_dir():
        problems.append(f"[daemon] state_dir {state} is not a directory")
    return problems


def flows_dir(settings: Settings) -> Path:
    return settings.resolve(settings.flows.dir)


__all__ = ["flows_dir", "settings_problems"]
