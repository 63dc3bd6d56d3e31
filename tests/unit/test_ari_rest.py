"""AriClient's REST logic (request building, answers, error mapping) over the fake
Asterisk's transport; the HTTP transport itself is tested in test_ari_client.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import pytest

from callflow.ari import (
    AriBadRequest,
    AriClient,
    AriConflict,
    AriConnectionError,
    AriError,
    AriHTTPError,
    AriNotFound,
    AriServerError,
    AriTimeout,
)
from callflow.errors import TelephonyError
from tests.support.fake_asterisk import FakeAsterisk, client_for


@pytest.fixture
def pbx() -> FakeAsterisk:
    return FakeAsterisk()


HelperCall = Callable[[AriClient], Awaitable[Any]]


@pytest.mark.parametrize(
    ("call", "method", "path", "query", "body", "answer", "result"),
    [
        (
            lambda c: c.get_application(),
            "GET",
            "/applications/callflow",
            {},
            None,
            {"name": "callflow", "channel_ids": ["c1"]},
            {"name": "callflow", "channel_ids": ["c1"]},
        ),
        (
            lambda c: c.channels_in_app(),
            "GET",
            "/applications/callflow",
            {},
            None,
            {"name": "callflow", "channel_ids": ["c1", "c2"]},
            ["c1", "c2"],
        ),
        (lambda c: c.list_channels(), "GET", "/channels", {}, None, [{"id": "c1"}], None),
        (
            lambda c: c.get_channel("a b/c"),
            "GET",
            "/channels/a%20b%2Fc",
            {},
            None,
            {"id": "a b/c"},
            {"id": "a b/c"},
        ),
        (lambda c: c.answer("c1"), "POST", "/channels/c1/answer", {}, None, None, None),
        (
            lambda c: c.hangup("c1"),
            "DELETE",
            "/channels/c1",
            {"reason": "normal"},
            None,
            None,
            None,
        ),
        (
            lambda c: c.hangup("c1", reason="busy"),
            "DELETE",
            "/channels/c1",
            {"reason": "busy"},
            None,
            None,
            None,
        ),
        (lambda c: c.ring("c1"), "POST", "/channels/c1/ring", {}, None, None, None),
        (
            lambda c: c.play("c1", ["sound:hello", "digits:12"], playback_id="p1", lang="fr"),
            "POST",
            "/channels/c1/play",
            {"media": "sound:hello,digits:12", "playbackId": "p1", "lang": "fr"},
            None,
            {"id": "p1", "state": "queued"},
            {"id": "p1", "state": "queued"},
        ),
        (
            lambda c: c.play("c1", "sound:hello"),
            "POST",
            "/channels/c1/play",
            {"media": "sound:hello"},
            None,
            {"id": "x"},
            None,
        ),
        (lambda c: c.stop_playback("p1"), "DELETE", "/playbacks/p1", {}, None, None, None),
        (
            lambda c: c.originate(
                "PJSIP/accueil",
                app_args="dial,c1",
                channel_id="o1",
                timeout=25,
                caller_id="Cabinet <0100000000>",
                variables={"CALLFLOW": "1"},
            ),
            "POST",
            "/channels",
            {
                "endpoint": "PJSIP/accueil",
                "app": "callflow",
                "appArgs": "dial,c1",
                "channelId": "o1",
                "timeout": "25",
                "callerId": "Cabinet <0100000000>",
            },
            {"variables": {"CALLFLOW": "1"}},
            {"id": "o1"},
            {"id": "o1"},
        ),
        (
            lambda c: c.originate("PJSIP/x", app="other"),
            "POST",
            "/channels",
            {"endpoint": "PJSIP/x", "app": "other"},
            None,
            {"id": "o2"},
            None,
        ),
        (
            lambda c: c.create_bridge(),
            "POST",
            "/bridges",
            {"type": "mixing"},
            None,
            {"id": "b1"},
            {"id": "b1"},
        ),
        (
            lambda c: c.create_bridge("holding", bridge_id="b2"),
            "POST",
            "/bridges",
            {"type": "holding", "bridgeId": "b2"},
            None,
            {"id": "b2"},
            None,
        ),
        (
            lambda c: c.add_channel("b1", ["c1", "c2"]),
            "POST",
            "/bridges/b1/addChannel",
            {"channel": "c1,c2"},
            None,
            None,
            None,
        ),
        (lambda c: c.destroy_bridge("b1"), "DELETE", "/bridges/b1", {}, None, None, None),
        (
            lambda c: c.set_variable("c1", "CDR(userfield)", "x"),
            "POST",
            "/channels/c1/variable",
            {"variable": "CDR(userfield)", "value": "x"},
            None,
            None,
            None,
        ),
        (
            lambda c: c.get_variable("c1", "CALLERID(num)"),
            "GET",
            "/channels/c1/variable",
            {"variable": "CALLERID(num)"},
            None,
            {"value": "0600000000"},
            "0600000000",
        ),
        (
            lambda c: c.continue_in_dialplan("c1", "from-callflow", "s", 1),
            "POST",
            "/channels/c1/continue",
            {"context": "from-callflow", "extension": "s", "priority": "1"},
            None,
            None,
            None,
        ),
        (
            lambda c: c.start_moh("c1", "default"),
            "POST",
            "/channels/c1/moh",
            {"mohClass": "default"},
            None,
            None,
            None,
        ),
        (lambda c: c.start_moh("c1"), "POST", "/channels/c1/moh", {}, None, None, None),
        (lambda c: c.stop_moh("c1"), "DELETE", "/channels/c1/moh", {}, None, None, None),
    ],
)
async def test_helpers_call_the_right_endpoint(
    pbx: FakeAsterisk,
    call: HelperCall,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    answer: Any,
    result: Any,
) -> None:
    pbx.reply(method, unquote(path), 204 if answer is None else 200, answer)
    got = await call(client_for(pbx))
    (req,) = pbx.requests
    assert (req.method, req.path, req.params) == (method, path, query)
    assert req.body == body
    assert got == (result if result is not None else answer)


async def test_helper_rejects_an_unexpected_answer_shape(pbx: FakeAsterisk) -> None:
    pbx.reply("GET", "/channels/c1", 200, [1, 2])
    pbx.reply("GET", "/channels/c1/variable", 200, [1, 2])
    client = client_for(pbx)
    with pytest.raises(AriError):
        await client.get_channel("c1")
    with pytest.raises(AriError):
        await client.get_variable("c1", "X")


@pytest.mark.parametrize(
    ("status", "body", "exc_type", "message"),
    [
        (400, {"message": "Invalid parameters"}, AriBadRequest, "Invalid parameters"),
        (422, {"message": "Endpoint not found"}, AriBadRequest, "Endpoint not found"),
        (404, {"message": "Channel not found"}, AriNotFound, "Channel not found"),
        (409, {"message": "Channel not in Stasis application"}, AriConflict, "Channel not in"),
        (500, {"message": "Allocation failed"}, AriServerError, "Allocation failed"),
        (503, "backend down", AriServerError, "backend down"),
        (401, None, AriHTTPError, "Unauthorized"),
    ],
)
async def test_error_status_maps_to_exception(
    pbx: FakeAsterisk, status: int, body: Any, exc_type: type[AriHTTPError], message: str
) -> None:
    pbx.reply("DELETE", "/channels/c1", status, body)
    with pytest.raises(exc_type) as info:
        await client_for(pbx).request("delete", "/channels/c1")
    err = info.value
    assert type(err) is exc_type
    assert isinstance(err, TelephonyError)
    assert err.status == status
    assert err.message.startswith(message)
    assert (err.method, err.path) == ("DELETE", "/channels/c1")
    assert str(status) in str(err)
    assert message in str(err)


async def test_invalid_json_success_is_an_ari_error(pbx: FakeAsterisk) -> None:
    pbx.reply("GET", "/channels", 200, "{nope")
    with pytest.raises(AriError):
        await client_for(pbx).request("GET", "/channels")


@pytest.mark.looptime
async def test_a_stalled_request_times_out_with_the_configured_timeout(pbx: FakeAsterisk) -> None:
    pbx.stall("POST", "/channels/c1/answer")
    client = client_for(pbx)
    with pytest.raises(AriTimeout) as info:
        await client.answer("c1")
    assert "10 s" in str(info.value)  # the config's request_timeout
    with pytest.raises(AriTimeout):
        await client.request("POST", "/channels/c1/answer", timeout=0.5)


async def test_the_fake_answers_unknown_channels_like_asterisk(pbx: FakeAsterisk) -> None:
    with pytest.raises(AriNotFound):
        await client_for(pbx).answer("nobody")


async def test_a_closed_client_sends_nothing(pbx: FakeAsterisk) -> None:
    client = client_for(pbx)
    await client.close()
    with pytest.raises(AriConnectionError):
        await client.list_channels()
    assert pbx.requests == []
