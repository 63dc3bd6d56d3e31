"""The shipped Asterisk configuration is safe to expose (issue 13), and
``callflow check-asterisk`` / ``asterisk-secrets`` do what they say."""

from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

import pytest

from callflow.app import Daemon
from callflow.cli import main
from callflow.errors import SettingsError
from callflow.pbxconf import check_dir, check_file, fill_secrets, parse
from callflow.settings import AmiSettings, AriSettings, DaemonSettings, FlowsSettings, Settings

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "asterisk-conf"
BENCH = REPO / "tests/integration/asterisk"


def _options(path: Path, section: str) -> dict[str, str]:
    """The options of every section named ``section`` (pjsip.conf has several)."""
    sections = [s for s in parse(path.read_text()) if s.name == section]
    assert sections, section
    return {k: v for s in sections for k, v, _ in s.options}


def test_the_bench_ami_account_has_exactly_the_shipped_rights() -> None:
    shipped, bench = (
        _options(CONF / "manager.conf", "callflow"),
        _options(BENCH / "manager.conf", "callflow"),
    )
    assert (shipped["read"], shipped["write"]) == ("system", "system")
    assert (bench["read"], bench["write"]) == (shipped["read"], shipped["write"])
    assert shipped["permit"] == "127.0.0.1/255.255.255.255"


def test_the_shipped_config_has_only_placeholders_to_fill() -> None:
    problems = check_dir(CONF)
    assert problems, "the shipped files must hold placeholders, not secrets"
    assert all("placeholder" in p.message for p in problems), problems
    files = sorted({p.file for p in problems})
    assert files == ["ari.conf", "manager.conf", "pjsip.conf", "voicemail.conf"]


def test_asterisk_secrets_fills_every_placeholder_and_the_check_then_passes(
    tmp_path: Path,
) -> None:
    etc, keys = tmp_path / "etc", tmp_path / "keys"
    shutil.copytree(CONF, etc)
    assert main(["asterisk-secrets", str(etc), "--secrets-dir", str(keys)]) == 0
    assert check_dir(etc) == []
    assert main(["check-asterisk", str(etc)]) == 0
    text = "\n".join(p.read_text() for p in etc.glob("*.conf"))
    assert not re.search(r"^[^;]*CHANGE-ME", text, re.M)
    ari = (keys / "ari-password").read_text().strip()
    assert len(ari) >= 32 and _options(etc / "ari.conf", "callflow")["password"] == ari
    ami = (keys / "ami-secret").read_text().strip()
    assert _options(etc / "manager.conf", "callflow")["secret"] == ami != ari
    for f in (keys / "ari-password", keys / "ami-secret"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    phones = {_options(etc / "pjsip.conf", n)["password"] for n in ("accueil", "dr-a", "dr-b")}
    assert len(phones) == 3  # one random value per phone
    pin = _options(etc / "voicemail.conf", "default")["200"].split(",")[0]
    assert pin.isdigit() and len(pin) == 8
    # a second run finds nothing to do and changes nothing
    before = (etc / "pjsip.conf").read_text()
    fill_secrets(etc, keys)
    assert (etc / "pjsip.conf").read_text() == before


def test_check_asterisk_exits_1_on_placeholders(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-asterisk", str(CONF)]) == 1
    assert "pjsip.conf:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        (
            "manager.conf",
            "[cf]\nsecret = x9Kq2\npermit = 127.0.0.1\nwrite = system,originate,command\n",
            "originate",
        ),
        ("manager.conf", "[cf]\nsecret = x9Kq2\nread = system\nwrite = system\n", "no permit"),
        ("pjsip.conf", "[a](!)\ntype = aor\nremove_existing = yes\n[p](a)\n", "remove_existing"),
        ("pjsip.conf", "[t](!)\ntype = endpoint\n[p](t)\nauth = p\n", "no acl"),
        ("pjsip.conf", "[p]\ntype = auth\nusername = p\npassword = p\n", "guessable"),
        ("voicemail.conf", "[general]\n[default]\n200 => 1234,Accueil\n", "PIN"),
        ("voicemail.conf", "[default]\n200 => 4711,Accueil\n", "PIN"),
        ("ari.conf", "[cf]\ntype = user\npassword = changeme\n", "guessable"),
    ],
)
def test_check_asterisk_finds_the_risky_settings(name: str, text: str, problem: str) -> None:
    problems = check_file(name, text)
    assert any(problem in p.message for p in problems), problems


def test_a_phone_template_with_an_acl_is_enough() -> None:
    text = "[t](!)\ntype = endpoint\nacl = practice-lan\n[p](t)\nauth = p\n"
    assert check_file("pjsip.conf", text) == []


@pytest.mark.parametrize("which", ["ari", "ami"])
def test_the_daemon_refuses_a_placeholder_secret(tmp_path: Path, which: str) -> None:
    settings = Settings(
        ari=AriSettings(password_env="ARI"),
        ami=AmiSettings(secret_env="AMI"),
        flows=FlowsSettings(dir=str(REPO / "dialplans")),
        base_dir=tmp_path,
    )
    env = {"ARI": "a-real-random-secret", "AMI": "another-real-secret"}
    env[which.upper()] = "CHANGE-ME-ari-password" if which == "ari" else "CHANGE-ME-ami-secret"
    with pytest.raises(SettingsError, match="placeholder"):
        Daemon(settings, env)


# -- the dialplan: toll fraud and logs ----------------------------------------------------


def _context(name: str) -> list[tuple[str, str]]:
    """(pattern, first application) of each extension of ``name`` in extensions.conf."""
    text = (CONF / "extensions.conf").read_text()
    body = text.split(f"[{name}]", 1)[1].split("\n[", 1)[0]
    return re.findall(r"^exten => ([^,]+),1,(.*)$", body, re.M)


def _matches(pattern: str, number: str) -> bool:
    if not pattern.startswith("_"):
        return pattern == number
    rx = ""
    for ch in re.findall(r"\[[^\]]*\]|.", pattern[1:]):
        rx += {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}.get(
            ch, ch if ch.startswith("[") else re.escape(ch)
        )
    return re.fullmatch(rx, number) is not None


def _dials_out(number: str) -> bool:
    """Does [internal-fallback] send ``number`` out? (Asterisk prefers exact and then the
    most specific patterns, so a number matched by a dialling pattern is dialled.)"""
    return any(
        _matches(p, number) and "sub-dial-outside" in app
        for p, app in _context("internal-fallback")
    )


@pytest.mark.parametrize(
    "number", ["0612345678", "0145678901", "0987654321", "0800123456", "+33612345678"]
)
def test_the_fallback_dials_french_national_numbers(number: str) -> None:
    assert _dials_out(number)


@pytest.mark.parametrize(
    "number",
    [
        "0044201234567",
        "00216123456",
        "+441234567890",
        "+21612345678",
        "0899123456",
        "0812345678",
        "3617",
        "118218",
    ],
)
def test_the_fallback_never_dials_international_or_premium(number: str) -> None:
    assert not _dials_out(number)


def test_exten_reaches_dial_and_gosub_only_filtered() -> None:
    text = (CONF / "extensions.conf").read_text()
    code = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
    for m in re.finditer(r"(Dial|Gosub|Stasis|Goto)\(([^\n]*)", code):
        args = m.group(2)
        assert "${EXTEN" not in args.replace("${FILTER(0-9,${EXTEN", ""), m.group(0)


def test_the_shipped_asterisk_config_logs_no_caller_number_and_no_dtmf() -> None:
    dialplan = (CONF / "extensions.conf").read_text()
    assert "${CALLERID" not in dialplan
    logger = _options(CONF / "logger.conf", "logfiles")
    assert all("dtmf" not in v for v in logger.values()), logger
    assert all("verbose(3)" not in v for v in logger.values()), logger


def test_the_bench_registering_phone_keeps_its_contact_like_production() -> None:
    shipped = _options(CONF / "pjsip.conf", "phone-aor")
    bench = _options(BENCH / "pjsip.conf", "roaming")
    assert shipped["remove_existing"] == bench["remove_existing"] == "no"
    assert shipped["max_contacts"] == bench["max_contacts"] == "1"


def test_the_daemon_refuses_a_pbx_config_with_placeholders(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    shutil.copytree(CONF, etc)

    def daemon() -> Daemon:
        settings = Settings(
            ari=AriSettings(password_env="ARI"),
            ami=AmiSettings(enabled=False),
            flows=FlowsSettings(dir=str(REPO / "dialplans")),
            daemon=DaemonSettings(asterisk_conf=str(etc)),
            base_dir=tmp_path,
        )
        return Daemon(settings, {"ARI": "a-real-random-secret"})

    with pytest.raises(SettingsError, match=r"pjsip\.conf:\d+: \[accueil\] password"):
        daemon()
    fill_secrets(etc, tmp_path / "keys")
    assert daemon().settings.daemon.asterisk_conf == str(etc)
