"""The shipped Asterisk include files are safe to expose (issue 13) and join an existing
configuration without replacing any of it (issue 14), and ``callflow check-asterisk`` /
``asterisk-secrets`` do what they say, on the include files or on the /etc/asterisk that
includes them."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from callflow.app import Daemon
from callflow.cli import main
from callflow.errors import SettingsError
from callflow.pbxconf import check_dir, check_file, fill_secrets, parse
from callflow.settings import AmiSettings, AriSettings, DaemonSettings, FlowsSettings, Settings

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "asterisk-conf/callflow"
JOIN = REPO / "asterisk-conf/join.sh"
BENCH = REPO / "tests/integration/asterisk"


def _options(path: Path, section: str) -> dict[str, str]:
    """The options of every section named ``section`` (pjsip.conf has several)."""
    sections = [s for s in parse(path.read_text()) if s.name == section]
    assert sections, section
    return {k: v for s in sections for k, v, _ in s.options}


def test_the_bench_ami_account_has_exactly_the_shipped_rights() -> None:
    shipped, bench = (
        _options(CONF / "manager_callflow.conf", "callflow"),
        _options(BENCH / "manager_callflow.conf", "callflow"),
    )
    assert (shipped["read"], shipped["write"]) == ("system", "system")
    assert (bench["read"], bench["write"]) == (shipped["read"], shipped["write"])
    assert shipped["permit"] == "127.0.0.1/255.255.255.255"


def test_the_shipped_config_has_only_placeholders_to_fill() -> None:
    problems = check_dir(CONF)
    assert problems, "the shipped files must hold placeholders, not secrets"
    assert all("placeholder" in p.message for p in problems), problems
    files = sorted({p.file for p in problems})
    assert files == [
        "ari_callflow.conf",
        "manager_callflow.conf",
        "pjsip_callflow.conf",
        "voicemail_callflow.conf",
    ]


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
    assert len(ari) >= 32 and _options(etc / "ari_callflow.conf", "callflow")["password"] == ari
    ami = (keys / "ami-secret").read_text().strip()
    assert _options(etc / "manager_callflow.conf", "callflow")["secret"] == ami != ari
    for f in (keys / "ari-password", keys / "ami-secret"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    pjsip = etc / "pjsip_callflow.conf"
    phones = {_options(pjsip, n)["password"] for n in ("accueil", "dr-a", "dr-b")}
    assert len(phones) == 3  # one random value per phone
    pin = _options(etc / "voicemail_callflow.conf", "default")["200"].split(",")[0]
    assert pin.isdigit() and len(pin) == 8
    # a second run finds nothing to do and changes nothing
    before = pjsip.read_text()
    fill_secrets(etc, keys)
    assert pjsip.read_text() == before


def test_check_asterisk_exits_1_on_placeholders(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-asterisk", str(CONF)]) == 1
    assert "pjsip_callflow.conf:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        (
            "manager.conf",
            "[callflow]\nsecret = x9Kq2\npermit = 127.0.0.1\nwrite = system,originate,command\n",
            "originate",
        ),
        ("manager.conf", "[cf]\nsecret = x9Kq2\nread = system\nwrite = system\n", "no permit"),
        ("pjsip.conf", "[a](!)\ntype = aor\nremove_existing = yes\n[p](a)\n", "remove_existing"),
        ("pjsip.conf", "[t](!)\ntype = endpoint\n[p](t)\nauth = p\n", "no acl"),
        ("pjsip.conf", "[p]\ntype = auth\nusername = p\npassword = p\n", "guessable"),
        ("voicemail.conf", "[general]\n[default]\n200 => 1234,Accueil\n", "PIN"),
        ("voicemail.conf", "[default]\n200 => 4711,Accueil\n", "PIN"),
        ("ari.conf", "[cf]\ntype = user\npassword = changeme\n", "guessable"),
        ("pjsip_callflow.conf", "[p]\ntype = auth\npassword = CHANGE-ME-p\n", "placeholder"),
        ("voicemail_callflow.conf", "[default](+)\n200 => 1234,Accueil\n", "PIN"),
        ("logger.conf", "[logfiles]\nfull => notice,warning,dtmf\n", "key presses"),
        ("logger.conf", "[logfiles]\nfull => notice,verbose\n", "dialled numbers"),
        ("logger.conf", "[logfiles]\nfull => verbose(3)\n", "dialled numbers"),
        ("logger.conf", "[logfiles]\nmessages.log => error,debug\n", "call details"),
    ],
)
def test_check_asterisk_finds_the_risky_settings(name: str, text: str, problem: str) -> None:
    problems = check_file(name, text)
    assert any(problem in p.message for p in problems), problems


def test_the_stock_log_levels_and_other_ami_accounts_rights_are_not_problems() -> None:
    # Debian's stock logger.conf, and verbose level 2 (no "Executing Dial(...)" lines)
    logger = "[logfiles]\nconsole => notice,warning,error\nfull => notice,verbose(2)\n"
    assert check_file("logger.conf", logger) == []
    # FreePBX's own AMI account needs its rights; only the daemon's is held to system,
    # but every account must be limited by address.
    admin = "[admin]\nsecret = x9Kq2-long-and-random\nread = all\nwrite = all\n"
    assert [p.message for p in check_file("manager.conf", admin)] == [
        "[admin]: no permit/deny lines"
    ]
    problems = check_file("manager.conf", admin, ami_user="admin")
    assert any("not needed" in p.message for p in problems)


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
    """(pattern, first application) of each extension of ``name`` in the dialplan."""
    text = (CONF / "extensions_callflow.conf").read_text()
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
    """Does [callflow-internal-fallback] send ``number`` out? (Asterisk prefers exact and
    then the most specific patterns, so a number matched by a dialling pattern is dialled.)"""
    return any(
        _matches(p, number) and "callflow-dial-outside" in app
        for p, app in _context("callflow-internal-fallback")
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
    text = (CONF / "extensions_callflow.conf").read_text()
    code = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
    for m in re.finditer(r"(Dial|Gosub|Stasis|Goto)\(([^\n]*)", code):
        args = m.group(2)
        assert "${EXTEN" not in args.replace("${FILTER(0-9,${EXTEN", ""), m.group(0)


def test_the_shipped_dialplan_logs_no_caller_number() -> None:
    dialplan = (CONF / "extensions_callflow.conf").read_text()
    assert "${CALLERID" not in dialplan
    for m in re.finditer(r"Log\(([^\n]*)", dialplan):
        assert "${EXTEN" not in m.group(1).replace("${FILTER(0-9,${EXTEN", ""), m.group(0)


def test_the_bench_registering_phone_keeps_its_contact_like_production() -> None:
    shipped = _options(CONF / "pjsip_callflow.conf", "callflow-phone-aor")
    bench = _options(BENCH / "pjsip_callflow.conf", "roaming")
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

    with pytest.raises(SettingsError, match=r"pjsip_callflow\.conf:\d+: \[accueil\] password"):
        daemon()
    fill_secrets(etc, tmp_path / "keys")
    assert daemon().settings.daemon.asterisk_conf == str(etc)


# -- joining an existing /etc/asterisk (asterisk-conf/join.sh) ------------------------------

# The host files as a stock Asterisk has them (Debian's, trimmed to what matters here).
STOCK = {
    "extensions.conf": "[general]\nstatic=yes\n\n[globals]\nTRUNK=DAHDI/G2\n",
    "pjsip.conf": "; no transport, no endpoint\n",
    "ari.conf": "[general]\nenabled = yes\n",
    "manager.conf": '[general]\nenabled = yes\nbindaddr = 127.0.0.1\n#include "manager.d/*.conf"',
    "http.conf": "[general]\nservername=Asterisk\nbindaddr=127.0.0.1\n",
    "cdr.conf": "[general]\n\n[csv]\nusegmtime=yes\n",
    "cdr_custom.conf": "; mappings\n",
    "voicemail.conf": "[general]\nformat=wav49\n\n[default]\n",
    "modules.conf": "[modules]\nautoload=yes\n",
    "logger.conf": "[logfiles]\nconsole => notice,warning,error\n",
}


def _stock(tmp_path: Path) -> Path:
    etc = tmp_path / "asterisk"
    etc.mkdir()
    for name, text in STOCK.items():
        (etc / name).write_text(text)
    return etc


def _join(etc: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(JOIN), str(etc)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_every_include_file_names_its_host_and_the_readme_shows_its_line() -> None:
    readme = (REPO / "asterisk-conf/README.md").read_text()
    optional = sorted((CONF.parent / "optional").glob("*.conf"))
    for path in sorted(CONF.glob("*.conf")) + sorted(BENCH.glob("*.conf")) + optional:
        m = re.search(r"^; callflow-include: (\S+\.conf)$", path.read_text(), re.M)
        assert m is not None, path
        assert m.group(1) in STOCK, (path, m.group(1))
        if path.parent != BENCH:
            assert f"#include callflow/{path.name}" in readme, path.name


def test_the_include_files_redefine_nothing_of_the_pbx() -> None:
    """Every section is callflow's own, or adds to the PBX's with "(+)": no [globals], no
    second [general], no PJSIP [global] or transport, contexts and templates callflow-*."""
    for path in CONF.glob("*.conf"):
        for s in parse(path.read_text()):
            header = next(
                line
                for line in path.read_text().splitlines()[s.line - 1 : s.line]
                if line.startswith("[")
            )
            if s.name in ("general", "modules", "default", "globals"):
                assert header.endswith("(+)"), (path.name, header)
            if path.name == "extensions_callflow.conf":
                assert s.name.startswith("callflow-"), s.name
            if path.name == "pjsip_callflow.conf":
                opts = dict((k, v) for k, v, _ in s.options)
                assert opts.get("type") not in ("global", "transport"), s.name
                assert s.template == s.name.startswith("callflow-"), s.name


def test_join_adds_one_include_line_per_host_and_keeps_the_rest(tmp_path: Path) -> None:
    etc = _stock(tmp_path)
    proc = _join(etc)
    assert proc.returncode == 0, proc.stderr
    for path in CONF.glob("*.conf"):
        host = re.search(r"^; callflow-include: (\S+)$", path.read_text(), re.M)
        assert host is not None
        text = (etc / host.group(1)).read_text()
        assert text.startswith(STOCK[host.group(1)])  # the stock file is kept whole
        assert text.rstrip().endswith(f"#include callflow/{path.name}")
        assert (etc / "callflow" / path.name).read_text() == path.read_text()
        assert stat.S_IMODE((etc / "callflow" / path.name).stat().st_mode) & 0o007 == 0
    # a second run (an upgrade) adds no line and keeps the site's edited files
    site = etc / "callflow/pjsip_callflow.conf"
    site.write_text(site.read_text().replace("192.0.2.10", "203.0.113.7"))
    before = {p.name: p.read_text() for p in etc.glob("*.conf")}
    assert _join(etc).returncode == 0
    assert {p.name: p.read_text() for p in etc.glob("*.conf")} == before
    assert "203.0.113.7" in site.read_text()


def test_join_warns_of_a_voicemail_the_modules_would_break(tmp_path: Path) -> None:
    etc = _stock(tmp_path)
    proc = _join(etc)
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr
    # An upgrade keeps the site's modules_callflow.conf of before the ODBC noload line.
    kept = etc / "callflow/modules_callflow.conf"
    kept.write_text(kept.read_text().replace("noload => app_voicemail_odbc.so", ""))
    proc = _join(etc)
    assert proc.returncode == 0
    assert "lacks 'noload => app_voicemail_odbc.so'" in proc.stderr
    # A PBX whose voicemail lives in ODBC: callflow's noload would leave it none.
    kept.write_text((CONF / "modules_callflow.conf").read_text())
    modules = etc / "modules.conf"
    modules.write_text(modules.read_text() + "noload => app_voicemail.so ; ODBC storage\n")
    proc = _join(etc)
    assert proc.returncode == 0
    assert "modules.conf noloads app_voicemail.so" in proc.stderr
    assert "lacks" not in proc.stderr
    # Its advice taken (callflow's ODBC noload deleted, "=" and CRLF as a site may write
    # them): nothing more to say.
    kept.write_text(kept.read_text().replace("noload => app_voicemail_odbc.so", ""))
    modules.write_text(STOCK["modules.conf"] + "noload = app_voicemail.so\r\n")
    proc = _join(etc)
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr


def test_join_changes_nothing_when_a_host_file_is_missing(tmp_path: Path) -> None:
    etc = _stock(tmp_path)
    (etc / "cdr_custom.conf").unlink()
    proc = _join(etc)
    assert proc.returncode != 0
    assert "cdr_custom.conf is missing" in proc.stderr
    assert not (etc / "callflow").exists()
    assert (etc / "extensions.conf").read_text() == STOCK["extensions.conf"]


def test_the_checks_and_the_secrets_follow_the_includes_of_etc_asterisk(tmp_path: Path) -> None:
    etc = _stock(tmp_path)
    assert _join(etc).returncode == 0
    found = {(p.file, p.message.split(":")[0]) for p in check_dir(etc)}
    assert ("callflow/pjsip_callflow.conf", "[accueil] password") in found
    assert ("callflow/manager_callflow.conf", "[callflow] secret") in found
    assert ("callflow/voicemail_callflow.conf", "[default] 200") in found
    keys = tmp_path / "keys"
    assert main(["asterisk-secrets", str(etc), "--secrets-dir", str(keys)]) == 0
    assert check_dir(etc) == []
    ari = (keys / "ari-password").read_text().strip()
    assert _options(etc / "callflow/ari_callflow.conf", "callflow")["password"] == ari
    # a rule of the host file applies to what it includes: DTMF in a log file
    (etc / "logger.d.conf").write_text("full => notice,dtmf\n")
    (etc / "logger.conf").write_text(STOCK["logger.conf"] + "#tryinclude logger.d.conf\n")
    assert [p.file for p in check_dir(etc)] == ["logger.d.conf"]


def test_an_include_after_an_account_does_not_make_it_an_empty_one(tmp_path: Path) -> None:
    """FreePBX's manager.conf ends with its own account, then includes manager_custom.conf:
    the included file's first header closes that account, which keeps its permit line."""
    etc = tmp_path / "asterisk"
    etc.mkdir()
    (etc / "manager.conf").write_text(
        "[general]\nenabled = yes\n[admin]\nsecret = x9Kq2-long-and-random\n"
        "permit = 127.0.0.1/255.255.255.0\nread = all\nwrite = all\n"
        "#include manager_custom.conf\n"
    )
    (etc / "manager_custom.conf").write_text(
        "[callflow]\nsecret = y7Lp3-long-and-random\npermit = 127.0.0.1\nread = system\n"
        "write = system,originate\n"
    )
    problems = check_dir(etc)
    assert [(p.file, p.message) for p in problems] == [
        ("manager_custom.conf", "[callflow] write: originate not needed (callflow: system only)")
    ]


def test_asterisk_secrets_keeps_the_owner_and_group_asterisk_reads_with(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file another owner needs root")
    etc = tmp_path / "callflow"
    shutil.copytree(CONF, etc)
    pjsip = etc / "pjsip_callflow.conf"
    os.chown(pjsip, 0, 4242)  # as join.sh leaves it: root:asterisk, 0640
    pjsip.chmod(0o640)
    fill_secrets(etc, tmp_path / "keys")
    st = pjsip.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 4242, 0o640)
    assert "CHANGE-ME" not in pjsip.read_text().split("[accueil](callflow-phone-auth)")[1]
