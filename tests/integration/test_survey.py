"""The survey step on real calls: Asterisk 22, the secretariat a SIPp callee that hangs up,
the patient a SIPp caller who rates the call with an RFC 2833 key; over Stasis (ARI) and
over FastAGI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.flows import write_flow

from .harness import AGI_PATIENT_IP, Bench, Daemon, wait_until

SURVEY_FLOW = """
version: 1
flow: survey
numbers: ["300"]
timezone: Europe/Paris
destinations:
  secretariat: {endpoint: PJSIP/accueil, ring: 10s}
start: talk
steps:
  talk:
    dial: secretariat
    next: rate
  rate:
    survey: {prompt: beep, scale: 5, timeout: 20s, thanks: beep}
"""

PATIENTS = {"ari": "127.0.0.1", "agi": AGI_PATIENT_IP}


@pytest.fixture
def flows_dir(flows_dir: Path) -> Path:
    write_flow(flows_dir, SURVEY_FLOW, "survey.yaml")
    return flows_dir


def survey_rows(daemon: Daemon) -> list[tuple[object, ...]]:
    return daemon.query(
        "SELECT call_id, result, score, scale FROM call_steps WHERE kind = 'survey'"
    )


@pytest.mark.parametrize("driver", ["ari", "agi"])
def test_the_patient_rates_the_call_after_the_secretary_hangs_up(
    daemon: Daemon, bench: Bench, driver: str
) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml", hangup_ms="1000")
    patient = bench.patient("300", ip=PATIENTS[driver], scenario="patient-rates.xml")
    assert accueil.wait(60) == 0, accueil.log()
    out = daemon.wait_outcome(timeout=60)
    # The conversation decides the outcome; the rating is a step of the call.
    assert (out["flow"], out["outcome"], out["destination"]) == (
        "survey",
        "answered",
        "secretariat",
    )
    wait_until(lambda: bool(survey_rows(daemon)), 30, "the survey step in the call log")
    ((call_id, result, score, scale),) = survey_rows(daemon)
    assert call_id == out["call"]
    # The first of the patient's keys (4, then 5, then 3) that reached the survey.
    assert (result, scale) == ("rated", 5), daemon.log()[-3000:]
    assert score in (4, 5, 3)
    assert patient.wait(60) == 0, patient.log()  # the daemon hung up after the rating
    (driver_used,) = daemon.query("SELECT driver FROM calls WHERE id = ?", call_id)[0]
    assert driver_used == driver


def test_no_survey_when_the_patient_hangs_up_first(daemon: Daemon, bench: Bench) -> None:
    accueil = bench.peer("accueil", "uas-answer.xml")  # stays until Asterisk's BYE
    patient = bench.patient("300", digits="4", wait_ms="1000", hold_ms="3000")
    assert patient.wait(60) == 0, patient.log()
    assert accueil.wait(60) == 0, accueil.log()
    out = daemon.wait_outcome(timeout=60)
    assert (out["outcome"], out["step"]) == ("answered", "talk")
    steps = daemon.steps(out["call"])
    assert [(s["step"], s["kind"]) for s in steps] == [("talk", "attempt"), ("talk", "dial")]
    assert survey_rows(daemon) == []
