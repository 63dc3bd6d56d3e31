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
    if settings.cdr.file:
        problem = _cdr_problem(settings.resolve(settings.cdr.file))
        if problem:
            problems.append(problem)
    state = settings.state_dir
    if state.exists() and not state.is_dir():
        problems.append(f"[daemon] state_dir {state} is not a directory")
    return problems


def _cdr_problem(path: Path) -> str | None:
    """Why this user cannot read the CDR file (run the check as the daemon's user: root
    reads every file); None when it can, or when Asterisk has not written it yet."""
    from .store.cdr import CdrFile

    problem = CdrFile(path).probe()
    return None if problem is None else f"[cdr] file: {problem}"


def cdr_summary(settings: Settings) -> str:
    """What the daemon will read of Asterisk's CDRs, in a line (the check prints it)."""
    from .store.cdr import world_readable

    if not settings.cdr.file:
        return (
            "CDR: none ([cdr] file): the calls the dialplan fallback takes while callflow "
            "is down, and what became of the calls it sheds, will not be logged"
        )
    path = settings.resolve(settings.cdr.file)
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"CDR: {path} (not written yet: Asterisk writes it at its first call)"
    except OSError as exc:
        return f"CDR: {path} ({exc.strerror or exc})"
    if world_readable(path, st):
        return (
            f"CDR: {path} (it holds callers' numbers and every user of this machine can "
            f"read it: chmod 750 {path.parent})"
        )
    return f"CDR: {path}"


def flows_dir(settings: Settings) -> Path:
    return settings.resolve(settings.flows.dir)


__all__ = ["cdr_summary", "flows_dir", "settings_problems"]
