"""The Asterisk configuration's secrets: refuse placeholders, generate random ones.

The shipped include files (``asterisk-conf/callflow/``, joined to an existing
``/etc/asterisk`` with ``#include`` lines) hold no secret: every password, the AMI secret
and the voicemail PIN are ``CHANGE-ME-…`` placeholders, public by definition.  A PBX
running with one is open to toll fraud (a REGISTER as ``accueil`` with a known password),
so:

* ``callflow asterisk-secrets DIR --secrets-dir S`` replaces each placeholder with a
  random value (a PIN with random digits) and writes the ARI password and AMI secret the
  daemon needs to ``S/ari-password`` and ``S/ami-secret`` (0600); no value is printed;
* ``callflow check-asterisk DIR`` lists, as ``file:line``, every placeholder or weak
  secret left, a callflow AMI account with more than it needs, an AMI account without
  permit/deny, ``remove_existing = yes``, a phone (an endpoint with ``auth``) without an
  ACL, and a log file that records DTMF or dialled numbers; exit 1 when there is one;
* both read what Asterisk reads: DIR's ``*.conf`` and every file they ``#include`` or
  ``#tryinclude`` (``callflow/pjsip_callflow.conf`` from ``pjsip.conf``...), each checked
  with the rules of the file that includes it; a folder of include files alone
  (``/etc/asterisk/callflow``) is read by their names (``pjsip_callflow.conf``: pjsip);
* the daemon refuses to start with a placeholder ARI password or AMI secret
  (``refuse_placeholder``), on bare metal as in docker.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .errors import SettingsError, UserError
from .files import write_private

PLACEHOLDER = re.compile(r"CHANGE-ME[\w-]*", re.IGNORECASE)
#: Values an attacker tries first (lower case).
WEAK = frozenset(
    {"", "1234", "0000", "1111", "12345", "123456", "password", "secret", "changeme"}
    | {"asterisk", "admin", "callflow"}
)
MIN_PIN_DIGITS = 6
#: AMI classes the daemon's account must not have (manager.conf read/write).
AMI_TOO_MUCH = frozenset({"all", "originate", "command", "config", "call", "dtmf", "cdr"})
_SECRET_KEYS = {"password", "secret"}
_ALPHABET = string.ascii_letters + string.digits


def weak(value: str) -> str | None:
    """Why ``value`` must not be a secret (None: it may be)."""
    if PLACEHOLDER.search(value):
        return "a public placeholder"
    if value.strip().lower() in WEAK:
        return "a well-known value"
    return None


def refuse_placeholder(value: str, what: str) -> None:
    """The daemon's guard: raise ``SettingsError`` for a placeholder or well-known secret."""
    why = weak(value)
    if why is not None:
        raise SettingsError(
            f"{what} is {why}: set a random secret (callflow asterisk-secrets) in Asterisk "
            "and in the daemon's secret file"
        )


def refuse_placeholders_in(directory: Path) -> None:
    """The daemon's guard on the PBX it shares a machine with (``[daemon] asterisk_conf``):
    a placeholder or guessable secret or PIN there stops the start; the other findings
    of ``check-asterisk`` are the admin's to weigh."""
    try:
        problems = check_dir(directory)
    except (OSError, UserError) as exc:
        raise SettingsError(f"[daemon] asterisk_conf: cannot check {directory}: {exc}") from None
    secrets_left = [p for p in problems if "secret" in p.message or "PIN" in p.message]
    if secrets_left:
        listed = "; ".join(str(p) for p in secrets_left[:5])
        raise SettingsError(
            f"{directory}: {len(secrets_left)} placeholder or guessable secret(s) in Asterisk's "
            f"configuration ({listed}): run callflow asterisk-secrets {directory}"
        )


# -- reading Asterisk's INI dialect ------------------------------------------------------


@dataclass
class Section:
    name: str
    line: int
    templates: list[str]
    template: bool  # "[name](!)": not an object itself
    options: list[tuple[str, str, int]] = field(default_factory=list)


_HEADER = re.compile(r"^\[([^\]]+)\](?:\(([^)]*)\))?")


def parse(text: str, section: str | None = None) -> list[Section]:
    """The sections of ``text``; ``section``: the one open where the file is #included
    (Asterisk puts an included file's first lines in the includer's current section)."""
    sections: list[Section] = [Section(section, 0, [], False)] if section else []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        m = _HEADER.match(line)
        if m:
            marks = [t.strip() for t in (m.group(2) or "").split(",") if t.strip()]
            templates = [t for t in marks if t != "!"]
            sections.append(Section(m.group(1).strip(), n, templates, "!" in marks))
            continue
        key, sep, value = line.partition("=")
        if sep and sections:
            sections[-1].options.append((key.strip().lower(), value.lstrip(">").strip(), n))
    if section and not sections[0].options:
        sections.pop(0)  # the file's own first header came before any setting
    return sections


def _resolved(section: Section, by_name: dict[str, list[Section]]) -> dict[str, str]:
    """Options of ``section`` with those of its templates under them."""
    out: dict[str, str] = {}
    for t in section.templates:
        for tmpl in by_name.get(t, []):
            if tmpl.template:
                out.update(_resolved(tmpl, by_name))
    out.update({k: v for k, v, _ in section.options})
    return out


# -- check-asterisk ------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


# -- what Asterisk reads: the files of a folder and those they include ---------------------

_INCLUDE = re.compile(r'^[ \t]*#(?:try)?include[ \t]+"?([^"\s;]+)"?')
_OWN_NAME = re.compile(r"(.+?)_callflow(?:_[\w-]+)?\.conf")


@dataclass(frozen=True)
class ConfFile:
    path: Path
    name: str  # as reported: relative to the folder checked (callflow/pjsip_callflow.conf)
    kind: str  # the Asterisk file whose rules apply (pjsip.conf)
    section: str | None = None  # the includer's section open at the #include line


def _kind(name: str) -> str:
    """``pjsip_callflow.conf`` is read as part of ``pjsip.conf``."""
    m = _OWN_NAME.fullmatch(name)
    return f"{m.group(1)}.conf" if m else name


def conf_files(directory: Path) -> list[ConfFile]:
    """``directory``'s ``*.conf`` and, depth first, every file they ``#include`` (relative
    to ``directory``, Asterisk's configuration folder; globs allowed), each with the kind
    of its top file.  A file reached twice is read once."""
    roots = sorted(directory.glob("*.conf"))
    if not roots:
        raise UserError(f"no *.conf in {directory}")
    seen: set[Path] = set()
    out: list[ConfFile] = []

    def visit(path: Path, kind: str, section: str | None) -> None:
        real = path.resolve()
        if real in seen or not path.is_file():
            return
        seen.add(real)
        try:
            name = str(path.relative_to(directory))
        except ValueError:
            name = str(path)
        out.append(ConfFile(path, name, kind, section))
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            header = _HEADER.match(line.strip())
            if header:
                section = header.group(1).strip()
            include = _INCLUDE.match(line)
            if include:
                target = include.group(1)
                pattern = target if target.startswith("/") else str(directory / target)
                for included in sorted(Path(p) for p in glob.glob(pattern)):
                    visit(included, kind, section)

    for root in roots:
        visit(root, _kind(root.name), None)
    return out


def check_dir(directory: Path, *, ami_user: str = "callflow") -> list[Problem]:
    problems: list[Problem] = []
    for f in conf_files(directory):
        text = f.path.read_text(encoding="utf-8", errors="replace")
        problems += check_file(f.name, text, kind=f.kind, ami_user=ami_user, section=f.section)
    return problems


def check_file(
    name: str,
    text: str,
    *,
    kind: str | None = None,
    ami_user: str = "callflow",
    section: str | None = None,
) -> list[Problem]:
    """The problems of one file, read with the rules of ``kind`` (default: its own name,
    ``pjsip_callflow.conf`` as ``pjsip.conf``); ``section``: see ``parse``."""
    kind = kind or _kind(Path(name).name)
    out: list[Problem] = []
    sections = parse(text, section)
    by_name: dict[str, list[Section]] = {}
    for s in sections:
        by_name.setdefault(s.name, []).append(s)
    for s in sections:
        for key, value, line in s.options:
            if PLACEHOLDER.search(value):
                out.append(Problem(name, line, f"[{s.name}] {key}: a placeholder secret is left"))
            elif key in _SECRET_KEYS and (weak(value) or value == s.name):
                out.append(Problem(name, line, f"[{s.name}] {key}: a guessable secret"))
            elif (
                kind == "voicemail.conf"
                and s.name not in ("general", "zonemessages")
                and "@" not in key  # an alias (1234@devices => 1234@default), not a box
            ):
                pin = value.split(",", 1)[0].strip()
                if weak(pin) or not (pin.isdigit() and len(pin) >= MIN_PIN_DIGITS):
                    msg = f"mailbox {key}: PIN must be {MIN_PIN_DIGITS}+ random digits"
                    out.append(Problem(name, line, msg))
            if key == "remove_existing" and value.lower() in ("yes", "true", "1"):
                msg = f"[{s.name}] remove_existing = yes: one REGISTER steals a phone's calls"
                out.append(Problem(name, line, msg))
        if kind == "manager.conf" and s.name != "general":
            out += _manager_user(name, s, rights=s.name == ami_user)
        if kind == "logger.conf" and s.name == "logfiles":
            out += _logged_too_much(name, s)
        if kind == "pjsip.conf" and not s.template:
            opts = _resolved(s, by_name)
            acl = any(k in opts for k in ("acl", "permit", "deny"))
            if opts.get("type") == "endpoint" and opts.get("auth") and not acl:
                msg = f"[{s.name}] a phone (auth) with no acl: reachable from anywhere"
                out.append(Problem(name, s.line, msg))
    return out


def _manager_user(name: str, s: Section, *, rights: bool) -> list[Problem]:
    """Every AMI account is limited by address; the daemon's (``rights``) to class system:
    other accounts (FreePBX's own...) need the rights they have."""
    out: list[Problem] = []
    opts = {k: (v, n) for k, v, n in s.options}
    for key in ("read", "write") if rights else ():
        value, line = opts.get(key, ("", s.line))
        extra = sorted({c.strip().lower() for c in value.split(",")} & AMI_TOO_MUCH)
        if extra:
            msg = f"[{s.name}] {key}: {', '.join(extra)} not needed (callflow: system only)"
            out.append(Problem(name, line, msg))
    if "permit" not in opts:
        out.append(Problem(name, s.line, f"[{s.name}]: no permit/deny lines"))
    return out


#: Log levels that record what a caller keyed or the numbers dialled (logger.conf).
_TELLING_LEVELS = {"dtmf": "callers' key presses", "debug": "call details"}


def _logged_too_much(name: str, s: Section) -> list[Problem]:
    """A log channel with DTMF, debug, or verbose level 3+ (its "Executing Dial(...)" lines
    carry the numbers dialled) keeps patients' choices and numbers in clear."""
    out: list[Problem] = []
    for channel, value, line in s.options:
        for level in (v.strip().lower() for v in value.split(",")):
            m = re.fullmatch(r"verbose(?:\((\d+)\))?", level)
            why = _TELLING_LEVELS.get(level)
            if m and (m.group(1) is None or int(m.group(1)) >= 3):
                why = "dialled numbers (verbose level 3 and up)"
            if why:
                msg = f"[logfiles] {channel}: '{level}' logs {why}: health data in clear"
                out.append(Problem(name, line, msg))
    return out


# -- asterisk-secrets ----------------------------------------------------------------------


def _random_secret() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(32))


def _random_pin() -> str:
    return "".join(secrets.choice(string.digits) for _ in range(8))


def fill_secrets(directory: Path, secrets_dir: Path) -> dict[str, int]:
    """Replace every placeholder in ``directory``'s files with a random value (one value
    per distinct placeholder); write the daemon's two secrets to ``secrets_dir``.
    Returns the number of placeholders replaced per file."""
    values: dict[str, str] = {}

    def value(m: re.Match[str]) -> str:
        token = m.group(0)
        if token not in values:
            values[token] = _random_pin() if token.lower().endswith("-pin") else _random_secret()
        return values[token]

    done: dict[str, int] = {}
    for f in conf_files(directory):
        path = f.path
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        count = 0
        for i, line in enumerate(lines):
            code, sep, comment = line.partition(";")
            new, n = PLACEHOLDER.subn(value, code)
            if n:
                lines[i], count = new + sep + comment, count + n
        if count:
            _write_private(path, "".join(lines), keep_mode=True)
            done[f.name] = count
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for token, file in (
        ("CHANGE-ME-ari-password", "ari-password"),
        ("CHANGE-ME-ami-secret", "ami-secret"),
    ):
        if token in values:
            _write_private(secrets_dir / file, values[token] + "\n")
    return done


def _write_private(path: Path, text: str, *, keep_mode: bool = False) -> None:
    """Write ``path`` atomically, readable by its owner only, or (``keep_mode``) with its old
    mode, owner and group: Asterisk reads /etc/asterisk/callflow as group asterisk, and a
    file rewritten by root as root:root would stop the PBX from reading its accounts."""
    old = path.stat() if keep_mode and path.exists() else None
    mode = old.st_mode & 0o777 if old is not None else 0o600
    write_private(path, text, mode & 0o770)  # never world-readable: these files hold secrets
    if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        try:
            os.chown(path, old.st_uid, old.st_gid)
        except PermissionError:
            raise UserError(
                f"{path}: secrets written, but its owner {old.st_uid}:{old.st_gid} could not be "
                "restored (run as root, or chown it back)"
            ) from None


# -- the commands ----------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "check-asterisk",
        help="refuse placeholder or weak secrets and risky settings in an Asterisk config dir",
    )
    c.add_argument(
        "dir", type=Path, metavar="DIR", help="e.g. /etc/asterisk (its #include files too)"
    )
    c.add_argument(
        "--ami-user",
        default="callflow",
        metavar="NAME",
        help="the daemon's AMI account, held to class system (default: callflow)",
    )
    c.set_defaults(func=cmd_check_asterisk)
    g = sub.add_parser(
        "asterisk-secrets",
        help="replace every CHANGE-ME placeholder in an Asterisk config dir with a random one",
    )
    g.add_argument(
        "dir", type=Path, metavar="DIR", help="e.g. /etc/asterisk/callflow (or /etc/asterisk)"
    )
    g.add_argument(
        "--secrets-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="where to write ari-password and ami-secret for the daemon (mode 0600)",
    )
    g.set_defaults(func=cmd_asterisk_secrets)


def cmd_check_asterisk(args: argparse.Namespace, out: TextIO) -> int:
    problems = check_dir(args.dir, ami_user=args.ami_user)
    for p in problems:
        print(p, file=out)
    if problems:
        print(f"{len(problems)} problem(s): callflow asterisk-secrets fixes placeholders", file=out)
        return 1
    print(f"{args.dir}: no placeholder, weak secret or risky setting found", file=out)
    return 0


def cmd_asterisk_secrets(args: argparse.Namespace, out: TextIO) -> int:
    done = fill_secrets(args.dir, args.secrets_dir)
    for name, n in done.items():
        print(f"{args.dir / name}: {n} random secret(s) set", file=out)
    if not done:
        print(f"{args.dir}: no placeholder left", file=out)
    print(f"daemon secrets (if generated): {args.secrets_dir}/ari-password, ami-secret", file=out)
    return 0


__all__ = [
    "ConfFile",
    "Problem",
    "check_dir",
    "conf_files",
    "fill_secrets",
    "refuse_placeholder",
    "refuse_placeholders_in",
    "weak",
]
