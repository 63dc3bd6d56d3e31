"""Bad input to the admin API is a 400 with a clear error, never a 500 (issue 13)."""

from __future__ import annotations

import pytest

from tests.unit.test_api import Env, env  # noqa: F401 - the shared fixture


@pytest.mark.parametrize(
    "until", ["0001-01-01T00:00", "0001-01-01T00:00+05:00", "9999-12-31T23:59"]
)
async def test_an_override_until_out_of_range_is_a_400(env: Env, until: str) -> None:  # noqa: F811
    status, body = await env.call(
        "POST", "/api/calendars/parc/office/override", json={"state": "closed", "until": until}
    )
    assert status == 400, body
    assert "until" in body["error"]


async def test_a_30_digit_callback_id_is_a_400(env: Env) -> None:  # noqa: F811
    status, body = await env.call("POST", "/api/callbacks/" + "9" * 30 + "/done", json={})
    assert status == 400, body
    assert "out of range" in body["error"]


async def test_the_largest_id_is_simply_not_found(env: Env) -> None:  # noqa: F811
    status, body = await env.call("POST", f"/api/callbacks/{2**63 - 1}/done", json={})
    assert status == 404, body
