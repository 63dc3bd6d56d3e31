"""Where the dialplan fallback left a call, read from the trace its CDR carries
(``callflow_fallback``, written by ``[callflow-fallback]`` and ``[callflow-hangup]``)."""

from __future__ import annotations

import json

import pytest

from callflow.store.cdr import FallbackFate, fallback_fate, older_handler, parse_line

F = FallbackFate


@pytest.mark.parametrize(
    ("trace", "hangup_by", "fate"),
    [
        # A conversation ends inside Dial(): the stage has no status, the Dial() has.
        ("secretariat dial=ANSWER", "caller", F.SECRETARIAT),
        ("secretariat dial=ANSWER", "peer", F.SECRETARIAT),
        ("secretariat=NOANSWER outside dial=ANSWER", "caller", F.OUTSIDE),
        # A dialplan whose Dial() returned (its g option) writes the status itself.
        ("secretariat=ANSWER", "caller", F.SECRETARIAT),
        ("secretariat=NOANSWER outside=ANSWER dial=ANSWER", "peer", F.OUTSIDE),
        # The caller hung up while held (a shed call), or rung.
        ("shed", "caller", F.ABANDONED),
        ("secretariat dial=CANCEL", "caller", F.ABANDONED),
        ("secretariat=BUSY outside dial=CANCEL", "caller", F.ABANDONED),
        # The voicemail: a message recorded, or the caller hung up there (which ends one).
        (
            "secretariat=NOANSWER outside=NOANSWER voicemail=SUCCESS dial=NOANSWER",
            "pbx",
            F.VOICEMAIL,
        ),
        ("secretariat=NOANSWER outside=NOANSWER voicemail dial=NOANSWER", "caller", F.VOICEMAIL),
        # Nobody: rung out and no message (the caller heard goodbye, or left during it).
        ("secretariat=NOANSWER outside=NOANSWER voicemail=FAILED dial=NOANSWER", "pbx", F.NOBODY),
        ("secretariat=NOANSWER outside=CHANUNAVAIL voicemail=USEREXIT", "caller", F.NOBODY),
        # The PBX ended it before anyone answered (Asterisk stopped, an operator).
        ("shed", "pbx", F.CUT),
        ("secretariat dial=CANCEL", "pbx", F.CUT),
        ("secretariat=NOANSWER outside=NOANSWER voicemail dial=NOANSWER", "pbx", F.CUT),
    ],
)
def test_the_fate_of_a_trace(trace: str, hangup_by: str, fate: FallbackFate) -> None:
    assert fallback_fate(trace, hangup_by) is fate


@pytest.mark.parametrize("trace", ["", "dial=ANSWER", "reception=ANSWER", "secretariat desk"])
def test_no_fate_is_guessed_from_a_trace_this_dialplan_does_not_write(trace: str) -> None:
    assert fallback_fate(trace, "caller") is None


@pytest.mark.parametrize(
    ("trace", "hangup_by"),
    [("secretariat", "peer"), ("secretariat", "caller"), ("secretariat=NOANSWER outside", "pbx")],
)
def test_an_older_handlers_trace_of_a_call_ended_while_rung_tells_nothing(
    trace: str, hangup_by: str
) -> None:
    # Before this release the handler wrote no Dial() status: a call that ended during a
    # ringing stage may have been a conversation, or a caller who gave up.
    assert fallback_fate(trace, hangup_by) is None
    assert older_handler(trace)


@pytest.mark.parametrize("trace", ["", "shed", "secretariat dial=ANSWER", "a=NOANSWER b"])
def test_a_trace_of_this_release_or_a_stranger_is_no_older_handlers(trace: str) -> None:
    assert not older_handler(trace)


def test_a_cdr_line_gives_its_fate() -> None:
    line = {
        "uniqueid": "1.1",
        "start": 1_780_000_000.0,
        "end": 1_780_000_060.0,
        "callflow_dialed": "100",
        "callflow_fallback": "secretariat dial=ANSWER",
        "callflow_hangup": "caller",
    }
    cdr = parse_line(json.dumps(line))
    assert cdr is not None and cdr.went_to_fallback
    assert cdr.fate is FallbackFate.SECRETARIAT
    none = parse_line(json.dumps({**line, "callflow_fallback": ""}))
    assert none is not None and none.fate is None


VM = "secretariat=NOANSWER outside=NOANSWER voicemail"


@pytest.mark.parametrize(
    ("trace", "hangup_by", "voicemail", "fate"),
    [
        # VoiceMail()'s status, from its own hangup handler, says whether a message was
        # kept: a caller who ends one by hanging up leaves SUCCESS behind.
        (f"{VM} dial=NOANSWER", "caller", "SUCCESS", F.VOICEMAIL),
        (f"{VM}=SUCCESS dial=NOANSWER", "pbx", "SUCCESS", F.VOICEMAIL),
        # Hung up during the greeting (FAILED), or before VoiceMail() began (NONE): the
        # trace alone would have said voicemail.
        (f"{VM} dial=NOANSWER", "caller", "FAILED", F.NOBODY),
        (f"{VM} dial=NOANSWER", "caller", "NONE", F.NOBODY),
        (f"{VM}=FAILED dial=NOANSWER", "pbx", "FAILED", F.NOBODY),
        (f"{VM}=USEREXIT", "caller", "USEREXIT", F.NOBODY),
        # Someone answered before the voicemail: its status is not asked.
        ("secretariat dial=ANSWER", "caller", "NONE", F.SECRETARIAT),
    ],
)
def test_the_voicemails_status_says_whether_a_message_was_left(
    trace: str, hangup_by: str, voicemail: str, fate: FallbackFate
) -> None:
    assert fallback_fate(trace, hangup_by, voicemail) is fate


@pytest.mark.parametrize(
    ("status", "left"), [("SUCCESS", True), ("FAILED", False), ("NONE", False), ("", None)]
)
def test_a_cdr_line_says_whether_a_message_was_left(status: str, left: bool | None) -> None:
    # A flow's voicemail step: no fallback trace, only the voicemail's status.
    line = {
        "uniqueid": "1.2",
        "start": 1_780_000_000.0,
        "end": 1_780_000_030.0,
        "callflow_dialed": "100",
        "callflow_hangup": "caller",
        "callflow_voicemail": status,
    }
    cdr = parse_line(json.dumps(line))
    assert cdr is not None and not cdr.went_to_fallback
    assert cdr.message_left is left


@pytest.mark.parametrize(
    ("fields", "older"),
    [
        # A flow's voicemail, or the fallback's stage, with no status: an older dialplan.
        ({"dcontext": "callflow-voicemail"}, True),
        ({"dcontext": "callflow-fallback", "callflow_fallback": f"{VM} dial=BUSY"}, True),
        # This release's: the status is there (NONE when VoiceMail() never began).
        ({"dcontext": "callflow-voicemail", "callflow_voicemail": "NONE"}, False),
        # No voicemail reached: nothing to say.
        ({"dcontext": "callflow-from-trunk"}, False),
        ({"dcontext": "callflow-fallback", "callflow_fallback": "secretariat dial=ANSWER"}, False),
    ],
)
def test_a_voicemail_cdr_without_its_status_is_an_older_dialplans(
    fields: dict[str, str], older: bool
) -> None:
    line = {"uniqueid": "1.3", "start": 1_780_000_000.0, "end": 1_780_000_030.0, **fields}
    cdr = parse_line(json.dumps(line))
    assert cdr is not None and cdr.older_voicemail_handler is older
