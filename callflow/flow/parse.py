"""Turn a loaded YAML document into a ``FlowFile``, with schema errors located by node."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..errors import Diagnostic, FlowError
from . import schema
from .loader import Document, PathKey

# Friendly words for the regular expressions of the schema.
_PATTERNS = {
    schema.NAME_PATTERN: "a name of letters, digits, '-', '_' or '.'",
    schema.KEY_PATTERN: "one phone key: 0-9, * or #",
    schema.PHONE_PATTERN: "a phone number of digits, optionally with a leading '+'",
    schema.DIALED_PATTERN: "a dialed number of digits, * or #",
    schema.SOUND_PATTERN: "a sound file name such as 'custom/welcome'",
    schema.VARIABLE_PATTERN: "a variable name of letters, digits and '_'",
    schema.MAILBOX_PATTERN: "a voicemail.conf mailbox such as '200' or '200@practice'",
}


def _known_keys() -> set[str]:
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for fname, info in model.model_fields.items():
            names.add(info.alias or fname)
            for arg in _model_args(info.annotation):
                walk(arg)

    walk(schema.FlowFile)
    for step_model in schema.STEP_KINDS.values():
        walk(step_model)
    return names


def _model_args(tp: Any) -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    for arg in getattr(tp, "__args__", ()) or ():
        out.extend(_model_args(arg))
    return out


_KNOWN = _known_keys()


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[PathKey, bool]:
    """Map a pydantic error location to a document path; True when it names a key."""
    path = list(loc)
    # A step is a tagged union: drop the tag that pydantic inserts after the step name.
    if len(path) >= 3 and path[0] == "steps" and path[2] in schema.STEP_KINDS:
        del path[2]
    is_key = False
    if path and path[-1] == "[key]":
        path.pop()
        is_key = True
    return tuple(path), is_key


def _message(err: ErrorDetails, path: PathKey) -> tuple[str, bool]:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    last = path[-1] if path else ""
    if kind == "extra_forbidden":
        if str(last) in _KNOWN:  # a real key, of another kind of step or section
            return f"key '{last}' is not allowed here", True
        hint = difflib.get_close_matches(str(last), _KNOWN, n=1)
        more = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown key '{last}'{more}", True
    if kind == "missing":
        return f"missing required key '{last}'", False
    if kind == "string_pattern_mismatch":
        what = _PATTERNS.get(str(ctx.get("pattern")), f"text matching {ctx.get('pattern')}")
        return f"invalid value {value!r}: expected {what}", False
    if kind == "step_kind":
        keys = ", ".join(sorted(value)) if isinstance(value, dict) else type(value).__name__
        return f"{err['msg']} (found: {keys})", False
    if kind == "literal_error" and path == ("version",):
        return f"unsupported version {value!r}: this callflow reads version 1", False
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping (key: value), got {_describe(value)}", False
    if kind == "list_type":
        return f"expected a list, got {_describe(value)}", False
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif value is not None and not isinstance(value, dict | list):
        msg = f"{msg} (got {value!r})"
    return msg, False


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"{value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def parse_document(doc: Document) -> schema.FlowFile:
    """Validate ``doc`` against the schema; raise ``FlowError`` with every located problem."""
    if not isinstance(doc.data, dict):
        raise FlowError([doc.diagnostic((), "a flow file must be a mapping (version, flow, ...)")])
    try:
        return schema.FlowFile.model_validate(doc.data)
    except ValidationError as exc:
        diags: list[Diagnostic] = []
        for err in exc.errors():
            path, is_key = _clean_loc(err["loc"])
            msg, at_key = _message(err, path)
            # A value error at ('calendars', <name>, 'weekly', <day key>) is about the key
            # (the ranges below it are reported at their index).
            day_key = len(path) == 4 and path[0] == "calendars" and path[2] == "weekly"
            if day_key and err["type"] == "value_error":
                at_key = True
            diags.append(doc.diagnostic(path, msg, key=is_key or at_key))
        raise FlowError(diags) from None
