"""Toll fraud (issue 13), with the daemon down so that only the dialplan decides: the
fallback dials French national numbers and never abroad, and a stranger's INVITE is
refused.  Asterisk hangs the caller up only after the dialplan has run, so once the
calling SIPp has ended, whatever reached the trunk is in the trunk's message trace."""

from __future__ import annotations

import itertools

from .harness import SIPP_DIR, Bench, Sipp, wait_trunk

_media = itertools.count(6400, 2)


def call_from(bench: Bench, ip: str, number: str) -> Sipp:
    """A call to ``number`` sent from ``ip`` (127.0.0.11: the accueil phone)."""
    port = 5170 + len(bench.procs)
    args = ["127.0.0.1:5060", "-sf", str(SIPP_DIR / "patient.xml"), "-s", number]
    args += ["-i", ip, "-p", str(port), "-mi", ip, "-mp", str(next(_media))]
    args += ["-m", "1", "-timeout", "60s", "-timeout_error", "-set", "hold_ms", "1000"]
    return bench._run("caller", args)


def invites(trunk: Sipp) -> list[str]:
    return [line for line in trunk.messages().splitlines() if line.startswith("INVITE sip:")]


def test_the_fallback_dials_a_national_number_but_never_abroad(bench: Bench) -> None:
    trunk_a = bench.peer("trunk-a", "uas-answer.xml", hangup_ms="500")
    wait_trunk("trunk-a", "online")
    for number in ("0044201234567", "+442012345678", "0899123456"):
        caller = call_from(bench, "127.0.0.11", number)
        caller.wait(90)
        assert invites(trunk_a) == [], f"{number} reached the trunk"
    # The control: a French mobile number does go out (the guard is not "dial nothing").
    caller = call_from(bench, "127.0.0.11", "0612345678")
    assert trunk_a.wait(90) == 0, trunk_a.log()
    caller.wait(90)
    [invite] = invites(trunk_a)
    assert invite.startswith("INVITE sip:0612345678@")


def test_an_invite_from_an_unknown_address_is_refused(bench: Bench) -> None:
    trunk_a = bench.peer("trunk-a", "uas-answer.xml", hangup_ms="500")
    wait_trunk("trunk-a", "online")
    # 127.0.0.99 matches no endpoint's address and carries no credentials.
    stranger = call_from(bench, "127.0.0.99", "0612345678")
    assert stranger.wait(90) != 0  # refused (401/403), never answered
    assert "SIP/2.0 40" in stranger.messages()
    assert invites(trunk_a) == []


def register(bench: Bench, ip: str, password: str, expires: str = "60") -> Sipp:
    """A phone at ``ip`` registering as 'roaming' (tests/integration/asterisk/, pjsip)."""
    args = ["127.0.0.1:5060", "-sf", str(SIPP_DIR / "register.xml"), "-s", "roaming"]
    args += ["-au", "roaming", "-ap", password, "-i", ip, "-p", "5201"]
    args += ["-m", "1", "-timeout", "30s", "-timeout_error", "-set", "expires", expires]
    return bench._run("register", args)


PASSWORD = "roaming-bench-4f9c2a"


def test_a_wrong_password_and_a_second_device_cannot_register(bench: Bench) -> None:
    wrong = register(bench, "127.0.0.21", "guessed-password")
    assert wrong.wait(60) != 0
    assert wrong.messages().count("SIP/2.0 401") >= 2  # challenged, then refused
    assert register(bench, "127.0.0.21", PASSWORD).wait(60) == 0  # the real phone
    try:
        # Someone with the password on another device: refused while the phone is
        # registered (remove_existing = no), so the front desk's calls are not stolen.
        thief = register(bench, "127.0.0.22", PASSWORD)
        assert thief.wait(60) != 0
        assert "SIP/2.0 403" in thief.messages(), thief.messages()[-2000:]
    finally:
        assert register(bench, "127.0.0.21", PASSWORD, expires="0").wait(60) == 0
