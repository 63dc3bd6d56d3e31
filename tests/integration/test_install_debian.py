"""packaging/install-debian.sh for real, in a Debian bookworm chroot: the steps the Docker
image runs (python:3.11-slim is bookworm), since containers cannot run on this machine.

It needs root, the Debian mirror (as the Asterisk sandbox does) and two minutes the first
time: debootstrap of a minimal bookworm, then ``apt-get install python3 python3-venv`` in
it.  ``scripts/test`` runs it with ``CALLFLOW_TEST_DEBIAN_CHROOT`` set to a chroot kept
beside the Asterisk sandbox (made once, then reused; the install script runs in a copy of
it); ``CALLFLOW_TEST_DEBIAN_CHROOT=1`` makes a fresh one under the test's tmp folder.
Without the variable the test is skipped, except in CI, where it fails.  The package and
its dependencies come from a wheelhouse built on the host (``pip wheel``), so the chroot
needs no index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WANTED = os.environ.get("CALLFLOW_TEST_DEBIAN_CHROOT", "")


@pytest.fixture(scope="module", autouse=True)  # module: before the wheelhouse is built
def _chroot_wanted() -> None:
    if WANTED:
        return
    why = "CALLFLOW_TEST_DEBIAN_CHROOT is not set (scripts/test sets it)"
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


def _run(*args: str | Path, timeout: float = 1800) -> str:
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def _gid(root: Path, group: str) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        name, _, gid, _ = line.split(":")
        if name == group:
            return int(gid)
    raise AssertionError(f"no group {group} in {root}/etc/group")


def _mirror() -> str:
    """The host apt's Debian mirror (asterisk-sandbox finds it the same way)."""
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in f.read_text().splitlines():
            if line.lower().startswith("uris:") and "security" not in line:
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "deb" and "security" not in line:
            return next(p for p in parts if p.startswith(("http:", "https:", "file:")))
    raise AssertionError("no Debian mirror in /etc/apt/sources.list*")


def _base(tmp_path: Path) -> Path:
    """A minimal bookworm with Python 3.11 and venv (made once when a path is given)."""
    base = Path(WANTED) if WANTED not in ("1", "yes", "true") else tmp_path / "base"
    if not (base / ".callflow-python").exists():
        shutil.rmtree(base, ignore_errors=True)
        _run("debootstrap", "--variant=minbase", "bookworm", base, _mirror())
        (base / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        (base / "usr/sbin/policy-rc.d").chmod(0o755)
        shutil.copy("/etc/resolv.conf", base / "etc/resolv.conf")
        _run("chroot", base, "apt-get", "update")
        _run(
            "chroot", base, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install",
            "-y", "--no-install-recommends", "python3", "python3-venv",
        )  # fmt: skip
        (base / ".callflow-python").touch()
    return base


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel and every dependency's, built on the host."""
    out = tmp_path_factory.mktemp("wheelhouse")
    _run("pip", "wheel", "--quiet", "--wheel-dir", out, REPO)
    return out


def test_the_install_script_installs_callflow_in_debian_bookworm(
    tmp_path: Path, wheelhouse: Path
) -> None:
    root = tmp_path / "root"
    _run("cp", "-a", _base(tmp_path), root)  # the base stays clean for the next run
    src = root / "tmp/src"
    src.mkdir(parents=True)
    for part in ("packaging", "dialplans"):
        shutil.copytree(REPO / part, src / part)
    shutil.copy(REPO / "callflow.toml", src / "callflow.toml")
    shutil.copytree(wheelhouse, src / "wheels")
    [wheel] = (src / "wheels").glob("callflow_pbx-*.whl")
    install = [
        "chroot", root, "env", "PIP_NO_INDEX=1", "PIP_FIND_LINKS=/tmp/src/wheels",
        "sh", "/tmp/src/packaging/install-debian.sh", "--uid", "10001",
        f"/tmp/src/wheels/{wheel.name}",
    ]  # fmt: skip
    first = _run(*install)

    assert "callflow:x:10001:10001:" in (root / "etc/passwd").read_text()
    [entry] = [
        e for e in (root / "etc/passwd").read_text().splitlines() if e.startswith("callflow:")
    ]
    assert entry.endswith(":/var/lib/callflow:/usr/sbin/nologin")
    version = _run("chroot", root, "/usr/local/bin/callflow", "--version")
    assert "callflow" in version
    settings = (root / "etc/callflow/callflow.toml").read_text()
    assert 'state_dir = "var"' not in settings and "[flows]" in settings
    # No Asterisk on this machine: no CDR file to read, and the script says so.
    assert '\n# file = "/var/log/asterisk/cdr-custom/callflow-cdr.json"' in settings
    assert "no Asterisk on this machine" in first
    assert "asterisk" not in _run("chroot", root, "id", "-nG", "callflow").split()
    assert (root / "etc/callflow/dialplans/cabinet-du-parc.yaml").is_file()
    secrets, state = root / "etc/callflow/secrets", root / "var/lib/callflow"
    assert (secrets.stat().st_mode & 0o777, secrets.stat().st_gid) == (0o750, 10001)
    assert (state.stat().st_mode & 0o777, state.stat().st_uid) == (0o700, 10001)
    unit = root / "etc/systemd/system/callflow.service"
    assert unit.read_text() == (REPO / "packaging/callflow.service").read_text()
    # The installed daemon reads its settings and flows where the unit says (and runs
    # as its user, with its groups, as systemd starts it: the package is readable by it).
    check = [
        "chroot", root, "setpriv", "--reuid=10001", "--regid=10001", "--init-groups",
        "env", "CALLFLOW_ARI_PASSWORD=a-real-random-secret-0123",
        "CALLFLOW_AMI_SECRET=another-real-secret-4567",
        "/opt/callflow/bin/callflow", "check", "--config", "/etc/callflow/callflow.toml",
    ]  # fmt: skip
    assert "CDR: none ([cdr] file)" in _run(*check)

    # An upgrade, Asterisk installed meanwhile: the script keeps the admin's settings,
    # which read no CDR file, so the daemon's user stays out of Asterisk's group.
    (root / "etc/callflow/callflow.toml").write_text(settings + "\n# the admin's edit\n")
    _run("chroot", root, "groupadd", "--system", "asterisk")
    upgraded = _run(*install)
    assert "reads no CDR file" in upgraded and "added to group" not in upgraded
    assert (root / "etc/callflow/callflow.toml").read_text().endswith("# the admin's edit\n")
    assert "asterisk" not in _run("chroot", root, "id", "-nG", "callflow").split()
    # Settings installed with Asterisk here read its CDR file; then callflow joins its
    # group, once.
    (root / "etc/callflow/callflow.toml").unlink()
    assert "user callflow added to group asterisk" in _run(*install)
    settings = (root / "etc/callflow/callflow.toml").read_text()
    assert '\nfile = "/var/log/asterisk/cdr-custom/callflow-cdr.json"' in settings
    assert not (root / "etc/callflow/callflow.toml.new").exists()
    assert "asterisk" in _run("chroot", root, "id", "-nG", "callflow").split()
    assert "added to group" not in _run(*install)
    # Asterisk's folder (its group's, 750, as asterisk-conf/README.md asks): not written
    # yet, then a file of its group's that the daemon's user reads.
    cdr = root / "var/log/asterisk/cdr-custom/callflow-cdr.json"
    cdr.parent.mkdir(parents=True)
    cdr.parent.parent.chmod(0o755)
    os.chown(cdr.parent, 0, _gid(root, "asterisk"))
    cdr.parent.chmod(0o750)
    checked = _run(*check)
    assert "CDR: /var/log/asterisk/cdr-custom/callflow-cdr.json (not written yet" in checked
    cdr.write_text("")
    os.chown(cdr, 0, _gid(root, "asterisk"))
    cdr.chmod(0o640)
    assert "CDR: /var/log/asterisk/cdr-custom/callflow-cdr.json\n" in _run(*check)
    users = (root / "etc/passwd").read_text().splitlines()
    assert [u for u in users if u.startswith("callflow:")] == [entry]
