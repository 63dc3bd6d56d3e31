"""Patient satisfaction from the call log: the ``survey`` steps' typed columns.

Definitions (both reports use them):

* a survey was **asked** when a call's ``survey`` step ended ``rated`` or ``no rating``
  (the callee hung up and the caller heard the question); a survey ``not asked`` (after
  an emergency tier) or that failed is not counted;
* **ratings**: the ``rated`` ones; **response rate** = ratings / asked;
* **satisfaction** = the mean of the ratings (``score``), out of the survey's ``scale``.
  Ratings given on different scales (a flow changed its survey, or several flows) are
  first brought to a 1-5 scale: ``1 + (score - 1) * 4 / (scale - 1)``.

A period with no survey asked has no satisfaction figure: "not collected".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select

from ..flow.events import StepKind, StepResult
from .models import Call, CallStep

ASKED = (str(StepResult.RATED), str(StepResult.NO_RATING))
COMMON_SCALE = 5  # ratings of different scales are compared on this one


@dataclass(frozen=True)
class SurveyAnswer:
    """One survey asked: of which call, and the rating given (None: no rating)."""

    call_id: str
    score: int | None
    scale: int | None


def survey_steps(calls: Select[*tuple[Any, ...]]) -> Select[str, str, int | None, int | None]:
    """(call id, result, score, scale) of the surveys asked in ``calls`` (a select of calls
    with their filters)."""
    ids = calls.with_only_columns(Call.id).scalar_subquery()
    return select(CallStep.call_id, CallStep.result, CallStep.score, CallStep.scale).where(
        CallStep.call_id.in_(ids),
        CallStep.kind == str(StepKind.SURVEY),
        CallStep.result.in_(ASKED),
    )


def answers_of(rows: Iterable[Any]) -> list[SurveyAnswer]:
    """The rows of ``survey_steps`` as answers (a ``rated`` row without a score, which
    the engine never writes, counts as no rating)."""
    out = []
    for call_id, result, score, scale in rows:
        rated = result == str(StepResult.RATED) and score is not None
        out.append(SurveyAnswer(call_id, score if rated else None, scale))
    return out


def satisfaction(answers: Iterable[SurveyAnswer]) -> dict[str, Any]:
    """The satisfaction figures of ``answers`` (JSON-ready)."""
    asked = list(answers)
    rated = [a for a in asked if a.score is not None]
    scales = {a.scale for a in rated}
    if len(scales) == 1 and None not in scales:
        (scale,) = scales
        values = [float(a.score or 0) for a in rated]
    else:
        scale = COMMON_SCALE
        values = [_common(a.score or 0, a.scale) for a in rated]
    by_score = Counter(a.score for a in rated if a.score is not None)
    return {
        "status": "collected" if asked else "not collected",
        "asked": len(asked),
        "ratings": len(rated),
        "declined": len(asked) - len(rated),
        "response_rate": len(rated) / len(asked) if asked else None,
        "average": sum(values) / len(values) if values else None,
        "scale": scale if rated else None,
        "by_score": {str(k): by_score[k] for k in sorted(by_score)},
    }


def _common(score: int, scale: int | None) -> float:
    if scale is None or scale < 2:
        return float(score)
    return 1 + (score - 1) * (COMMON_SCALE - 1) / (scale - 1)


__all__ = ["SurveyAnswer", "answers_of", "satisfaction", "survey_steps"]
