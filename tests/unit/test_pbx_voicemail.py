"""Asterisk's voicemail as its module list shows it, read at each connection: Debian's
app_voicemail_odbc.so, declining beside app_voicemail.so, unregisters VoiceMail()."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from callflow.app import Daemon
from callflow.ari.client import EVENT_CONNECTED
from callflow.ari.pbxmodules import voicemail_modules
from callflow.ari.service import CallService
from callflow.settings import (
    AriSettings,
    DaemonSettings,
    FlowsSettings,
    HttpSettings,
    Settings,
)
from tests.support.fake_asterisk import FakeAsterisk, client_for
from tests.support.polling import wait_until

OK, NOT = "Running", "Not Running"
DIALPLANS = Path(__file__).resolve().parents[2] / "dialplans"


@pytest.mark.parametrize(
    ("modules", "problem"),
    [
        ([("app_voicemail.so", OK), ("res_pjsip_send_to_voicemail.so", OK)], None),
        ([("app_voicemail_odbc.so", OK)], None),  # a PBX whose messages live in ODBC
        # Debian's stock autoload: both loaded, the second declined and unregistered both.
        ([("app_voicemail.so", OK), ("app_voicemail_odbc.so", NOT)], "noload => app_voicemail"),
        ([("app_voicemail", OK), ("app_voicemail_imap", NOT)], "app_voicemail_imap.so failed"),
        ([("res_pjsip_send_to_voicemail.so", OK)], "no voicemail module runs"),
        ([("app_voicemail.so", NOT)], "no voicemail module runs"),
    ],
)
def test_what_the_module_list_says_of_voicemail(
    modules: list[tuple[str, str]], problem: str | None
) -> None:
    found = voicemail_modules({"name": n, "status": s} for n, s in modules)
    if problem is None:
        assert found.problem is None
    else:
        assert found.problem is not None and problem in found.problem


async def test_each_connection_reads_the_modules_and_says_what_is_wrong(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "callflow.ari")
    pbx = FakeAsterisk()
    pbx.modules = [("app_voicemail.so", OK), ("app_voicemail_odbc.so", NOT)]
    async with CallService(client_for(pbx), engine=None, flows=None) as service:  # type: ignore[arg-type]
        assert service.voicemail is None  # not read before a connection
        service.dispatch({"type": EVENT_CONNECTED})
        await wait_until(lambda: service.voicemail is not None, 30)
        assert service.voicemail is not None and service.voicemail.problem is not None
        told = [r for r in caplog.records if "unregistered VoiceMail()" in r.getMessage()]
        assert len(told) == 1 and told[0].levelname == "ERROR"
        # Asterisk restarted with the fix: the next connection says so.
        pbx.modules = [("app_voicemail.so", OK)]
        service.dispatch({"type": EVENT_CONNECTED})
        await wait_until(lambda: "voicemail works again" in caplog.text, 30)
        assert service.voicemail is not None and service.voicemail.problem is None


async def test_the_module_check_reaches_the_engine_and_the_health_check(
    tmp_path: Path,
) -> None:
    # The wiring: what the call service read of Asterisk's modules is what the engine asks
    # before every voicemail step (ARI or FastAGI; VM_INFO() would still answer 1: only
    # the module list tells), and what /healthz says.
    pbx = FakeAsterisk()
    pbx.modules = [("app_voicemail_odbc.so", OK), ("app_voicemail.so", NOT)]
    daemon = Daemon(
        Settings(
            ari=AriSettings(password_env="TEST_ARI"),
            flows=FlowsSettings(dir=str(DIALPLANS)),
            daemon=DaemonSettings(state_dir=str(tmp_path)),
            http=HttpSettings(enabled=False),
            base_dir=tmp_path,
        ),
        {"TEST_ARI": "x", "CALLFLOW_AMI_SECRET": "y"},
    )
    assert daemon.services.voicemail_problem() is None  # not read yet: no known fault
    assert daemon._checks()["voicemail"]() is True
    daemon.service.client = client_for(pbx)
    async with daemon.service as service:
        service.dispatch({"type": EVENT_CONNECTED})
        await wait_until(lambda: service.voicemail is not None, 30)
    problem = daemon.services.voicemail_problem()
    assert problem is not None and "noload => app_voicemail_odbc.so" in problem
    assert daemon._checks()["voicemail"]() is False


async def test_a_module_list_asterisk_cannot_give_yet_is_read_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # At its boot Asterisk answers the list only once its modules are loaded: a read that
    # fails is retried, and meanwhile nothing stale is believed.
    pbx = FakeAsterisk()
    pbx.reply("GET", "/asterisk/modules", 503, {"message": "loading"})
    async with CallService(client_for(pbx), engine=None, flows=None) as service:  # type: ignore[arg-type]
        service.dispatch({"type": EVENT_CONNECTED})
        await wait_until(lambda: "modules not read" in caplog.text, 30)
        assert service.voicemail is None and service.voicemail_problem() is None
        pbx.replies.clear()  # loaded: the list comes
        await wait_until(lambda: service.voicemail is not None, 30)
        assert service.voicemail is not None and service.voicemail.problem is None
