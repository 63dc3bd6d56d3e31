"""Property tests: no input makes the loader, the schema or the graph checks crash.

Whatever the file holds, the outcome is a document/flow or a ``FlowError`` whose
diagnostics point inside the file; never another exception.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callflow.errors import Diagnostic, FlowError
from callflow.flow.loader import load_text
from callflow.flow.parse import parse_document
from callflow.flow.registry import compile_document
from callflow.flow.schema import STEP_KINDS
from callflow.flow.validate import validate_flow

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

STEP_NAMES = ["a", "b", "c", "d", "e"]
TARGETS = [*STEP_NAMES, "missing", "A", ""]  # names of steps that exist, and some that do not
DESTS = ["desk", "out", "nowhere"]
FIELDS = [
    "next",
    "failed",
    "busy",
    "no_answer",
    "open",
    "closed",
    "holiday",
    "prompt",
    "options",
    "timeout",
    "attempts",
    "invalid",
    "no_input",
    "barge_in",
    "tier",
    "to",
    "ring_in_turn",
    "confirm",
    "announce",
    "queue",
    "priority",
    "box",
    "ring",
    "route",
    "label",
    "<<",
    "nxt",
    "1",
]
SCALARS = st.sampled_from(
    [
        "0180000000",
        "no",
        "yes",
        "on",
        "010",
        "12:30",
        "20s",
        "20 seconds",
        "5",
        "-1",
        "1.5",
        "*",
        "#",
        "*#9",
        "PJSIP/x",
        "custom/x",
        "../x",
        "Europe/Paris",
        "Europe",
        "25:00-26:00",
        "08:00-12:00",
        "mon-fri",
        "2026-08-03",
        "2026-13-45",
        "é",
        "",
    ]
)
BAD = ("25:00-26:00", "12:30", "", "08:00-08:00")
LEAF = st.one_of(
    SCALARS,
    st.sampled_from(TARGETS),
    st.none(),
    st.booleans(),
    st.integers(-5, 30),
    st.text(max_size=8),
)


NESTED = st.recursive(
    LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(FIELDS + list(STEP_KINDS)), inner, max_size=3),
    ),
    max_leaves=5,
)
BRANCHES = {  # the optional ways out of each kind of step
    "menu": ["failed"],
    "schedule": ["holiday"],
    "dial": ["next", "busy", "no_answer", "failed"],
    "forward": ["next", "busy", "no_answer", "failed"],
    "escalate": ["failed"],
    "callback": ["failed"],
    "voicemail": ["failed"],
    "survey": ["next"],
}


def mostly(good: Any, *bad: Any) -> st.SearchStrategy[Any]:
    """``good`` nine times in ten, else one of ``bad``: most flows must get past the schema."""
    return st.sampled_from([good] * 9 * len(bad) + list(bad))


@st.composite
def step(draw: st.DrawFn, names: list[str]) -> Any:
    """A step of a random kind, mostly well formed, pointing at random (maybe missing) steps."""
    targets = st.sampled_from([*names, *names, *names, "missing"])
    kind = draw(st.sampled_from(list(STEP_KINDS)))
    dest = draw(st.sampled_from(DESTS))
    bodies: dict[str, dict[str, Any]] = {
        "play": {"play": "custom/x", "next": draw(targets)},
        "menu": {
            "menu": {
                "prompt": "custom/menu",
                "options": draw(
                    st.dictionaries(
                        st.sampled_from(["1", "2", "3", "*", "#", "12"]), targets, max_size=3
                    )
                ),
            }
        },
        "schedule": {
            "schedule": draw(st.sampled_from(["office", "office", "nocal"])),
            "open": draw(targets),
            "closed": draw(targets),
        },
        "dial": {"dial": dest},
        "forward": {"forward": dest},
        "escalate": {
            "escalate": draw(
                st.sampled_from(
                    [
                        {"tier": "1", "to": dest},
                        {"tier": "2", "ring_in_turn": [dest, "desk"], "confirm": "1"},
                        {"tier": "0", "to": dest, "ring_in_turn": [dest]},
                    ]
                )
            )
        },
        "callback": {"callback": {"queue": "same-day", "priority": "high"}},
        "voicemail": {"voicemail": {"box": "practice"}},
        "set": {"set": {"X": "1"}, "next": draw(targets)},
        "goto": {"goto": draw(targets)},
        "hangup": {"hangup": None},
        "survey": {"survey": {"prompt": "custom/rate", "scale": draw(mostly(5, 1, 10, "x"))}},
    }
    body = bodies[kind]
    for field in BRANCHES.get(kind, []):
        if draw(st.booleans()):
            body[field] = draw(targets)
    # Now and then, break it: a random key, a random value, a second kind, a dropped key.
    for _ in range(draw(st.integers(0, 19)) // 18):
        what = draw(st.integers(0, 3))
        key = draw(st.sampled_from([*FIELDS, *STEP_KINDS]))
        if what == 0:
            body[key] = draw(NESTED)
        elif what == 1 and body:
            body[draw(st.sampled_from(sorted(body)))] = draw(NESTED)
        elif what == 2 and body:
            body.pop(draw(st.sampled_from(sorted(body))))
        else:
            return draw(NESTED)
    return body


@st.composite
def flows(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(STEP_NAMES), min_size=1, max_size=5, unique=True))
    doc: dict[str, Any] = {
        "version": draw(mostly("1", "2", None)),
        "flow": draw(mostly("t", "bad name")),
        "numbers": draw(mostly(["100"], ["100", "100"], "100", ["1a"])),
        "timezone": draw(mostly("Europe/Paris", "Europe", "Mars/X")),
        "fallback": draw(st.sampled_from([*DESTS, None])),
        "destinations": {
            "desk": {"endpoint": "PJSIP/desk"},
            "out": {"number": "0180000000", "route": draw(st.sampled_from(["r", "r", "zz"]))},
        },
        "routes": {"r": draw(mostly(["t1", "t2"], [], ["t1", "t1"]))},
        "calendars": {
            "office": {
                "weekly": {draw(mostly("mon-fri", "satx")): [draw(mostly("08:00-12:30", *BAD))]},
                "holidays": {"country": "FR", "subdivision": draw(mostly("57", "99", None))},
            }
        },
        "start": draw(st.sampled_from([*names, "missing"])),
        "steps": {name: draw(step(names)) for name in names},
    }
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(["version", "steps", "nxt", "calendars"]))] = draw(NESTED)
    return doc


def assert_inside(diags: list[Diagnostic], text: str, file: str) -> None:
    assert diags, "a FlowError must say what is wrong"
    # Every line break YAML knows (\n, \r, \x85, \u2028, \u2029) splits a str line too.
    last_line = len(text.splitlines()) + 1
    for d in diags:
        assert d.file == file
        assert 1 <= d.line <= last_line, (d, text)
        assert d.col >= 1, d
        assert d.message and "\n" not in d.message, d
        assert "Traceback" not in d.message


def check_text(text: str) -> None:
    """Load, parse and validate ``text``: only FlowError may come out, located in the file."""
    try:
        doc = load_text(text, "fuzz.yaml")
    except FlowError as exc:
        assert_inside(exc.diagnostics, text, "fuzz.yaml")
        return
    try:
        spec = parse_document(doc)
    except FlowError as exc:
        assert_inside(exc.diagnostics, text, "fuzz.yaml")
        return
    diags = validate_flow(spec, doc)
    if diags:
        assert_inside(diags, text, "fuzz.yaml")
        try:
            compile_document(doc)
        except FlowError as exc:
            assert exc.diagnostics == sorted(diags)
        else:
            raise AssertionError("compile_document accepted a flow with graph errors")
    else:
        assert compile_document(doc).name == spec.flow


@FUZZ
@given(flows(), st.booleans())
def test_generated_flows_never_crash_the_checks(data: dict[str, Any], flow_style: bool) -> None:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=flow_style)
    check_text(text)


@FUZZ
@given(st.text(max_size=200))
def test_random_text_never_crashes_the_loader(text: str) -> None:
    check_text(text)


YAML_TOKENS = st.sampled_from(
    [
        "a",
        "steps",
        "play",
        "next",
        ":",
        ": ",
        "- ",
        "-",
        "[",
        "]",
        "{",
        "}",
        ",",
        "? ",
        "&x ",
        "*x",
        "<<: ",
        "!!str ",
        "!t ",
        "'",
        '"',
        "|",
        ">",
        "#",
        "---",
        "...",
        "~",
        "\n",
        "\n  ",
        "\n    ",
        "\t",
        " ",
        "%YAML 1.1\n",
        "\x00",
        "\r",
        "\u2028",
        "\ufeff",
    ]
)


@FUZZ
@given(st.lists(YAML_TOKENS, max_size=40))
def test_yaml_like_token_soup_never_crashes_the_loader(tokens: list[str]) -> None:
    check_text("".join(tokens))


def test_the_checks_run_on_a_known_good_flow() -> None:
    # The property tests must be able to reach the graph checks, not only the schema.
    text = yaml.safe_dump(
        {
            "version": "1",
            "flow": "t",
            "numbers": ["100"],
            "timezone": "Europe/Paris",
            "destinations": {"desk": {"endpoint": "PJSIP/desk"}},
            "start": "a",
            "steps": {"a": {"play": "custom/x", "next": "b"}, "b": {"dial": "desk"}},
        }
    )
    check_text(text)
    assert compile_document(load_text(text, "ok.yaml")).name == "t"
