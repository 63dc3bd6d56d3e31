"""callflow.flow.loader: YAML with positions, our own scalar rules, located errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from callflow.errors import Diagnostic, FlowError
from callflow.flow import loader
from callflow.flow.loader import Document, Mark, load_file, load_text


def load(text: str) -> Document:
    return load_text(textwrap.dedent(text).lstrip("\n"), "f.yaml")


def errors(text: str) -> list[str]:
    with pytest.raises(FlowError) as info:
        load_text(textwrap.dedent(text).lstrip("\n"), "f.yaml")
    return [str(d) for d in info.value.diagnostics]


# -- positions ------------------------------------------------------------------------------

POSITIONS = """
version: 1
steps:
  welcome:
    play: [custom/a, custom/b]
    next: menu
  menu:
      menu: {prompt: p, options: {"1": x}}
"""


def test_values_and_keys_have_line_and_column() -> None:
    doc = load(POSITIONS)
    assert doc.values[()] == Mark(1, 1)
    assert doc.values[("version",)] == Mark(1, 10)
    assert doc.keys[("version",)] == Mark(1, 1)
    assert doc.keys[("steps",)] == Mark(2, 1)
    assert doc.values[("steps",)] == Mark(3, 3)  # a block mapping starts at its first key
    assert doc.keys[("steps", "welcome")] == Mark(3, 3)
    assert doc.keys[("steps", "welcome", "play")] == Mark(4, 5)
    assert doc.values[("steps", "welcome", "play")] == Mark(4, 11)
    assert doc.values[("steps", "welcome", "play", 0)] == Mark(4, 12)
    assert doc.values[("steps", "welcome", "play", 1)] == Mark(4, 22)
    assert doc.values[("steps", "welcome", "next")] == Mark(5, 11)
    assert doc.keys[("steps", "menu", "menu")] == Mark(7, 7)
    assert doc.keys[("steps", "menu", "menu", "options", "1")] == Mark(7, 35)
    assert doc.values[("steps", "menu", "menu", "options", "1")] == Mark(7, 40)


def test_locate_falls_back_to_the_nearest_parent() -> None:
    doc = load(POSITIONS)
    # A missing key is reported where its mapping is.
    assert doc.locate(("steps", "welcome", "barge_in")) == Mark(4, 5)
    assert doc.locate(("steps", "welcome", "next"), key=True) == Mark(5, 5)
    assert doc.locate(("steps", "welcome", "next")) == Mark(5, 11)
    assert doc.locate(("nothing", "here")) == Mark(1, 1)
    assert doc.diagnostic(("steps", "menu"), "boom", key=True) == Diagnostic("f.yaml", 6, 3, "boom")


def test_flow_style_positions() -> None:
    doc = load('a: {b: [x, "y"], c: ~}\n')
    assert doc.values[("a", "b", 1)] == Mark(1, 12)
    assert doc.keys[("a", "c")] == Mark(1, 18)
    assert doc.data == {"a": {"b": ["x", "y"], "c": None}}


# -- scalars --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_value", "expected"),
    [
        ("0180000000", "0180000000"),  # a phone number keeps its leading zero
        ("no", "no"),
        ("on", "on"),
        ("yes", "yes"),
        ("off", "off"),
        ("y", "y"),
        ("010", "010"),  # not octal 8
        ("0o10", "0o10"),
        ("0x1F", "0x1F"),
        ("12:30", "12:30"),  # not sexagesimal 750
        ("1.5", "1.5"),
        ("1e3", "1e3"),
        (".inf", ".inf"),
        (".nan", ".nan"),
        ("2026-12-25", "2026-12-25"),  # not a date
        ("+33388000000", "+33388000000"),
        ("'true'", "true"),  # quoted: always a string
        ('"null"', "null"),
        ("'~'", "~"),
        ("''", ""),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ("null", None),
        ("Null", None),
        ("NULL", None),
        ("~", None),
        ("", None),
        ("!!int 010", "010"),  # tags are ignored, never executed nor converted
        ("!!python/object/apply:os.system [echo]", ["echo"]),
    ],
)
def test_scalars_stay_strings_except_true_false_null(yaml_value: str, expected: object) -> None:
    assert load(f"v: {yaml_value}\n").data == {"v": expected}


def test_block_scalars_are_strings() -> None:
    doc = load(
        """
        a: |
          true
        b: >
          null
        """
    )
    assert doc.data == {"a": "true\n", "b": "null\n"}


def test_keys_are_strings() -> None:
    doc = load(
        """
        1: one
        true: yes
        null: nothing
        0180: z
        """
    )
    assert doc.data == {"1": "one", "true": "yes", "null": "nothing", "0180": "z"}
    assert all(isinstance(k, str) for k in doc.data)


# -- errors ---------------------------------------------------------------------------------


def test_duplicate_key_names_both_lines() -> None:
    assert errors(
        """
        version: 1
        flow: a
        version: 2
        """
    ) == ["f.yaml:3:1: duplicate key 'version' (first defined at line 1)"]


def test_duplicate_nested_key_and_quoted_spelling() -> None:
    assert errors(
        """
        steps:
          a:
            play: x
            next: b
          b:
            goto: a
          'a':
            goto: b
        """
    ) == ["f.yaml:7:3: duplicate key 'a' (first defined at line 2)"]


def test_every_duplicate_is_reported() -> None:
    assert errors("a: 1\nb: 2\na: 3\nb: 4\n") == [
        "f.yaml:3:1: duplicate key 'a' (first defined at line 1)",
        "f.yaml:4:1: duplicate key 'b' (first defined at line 2)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1, 2\nb: 3\n", "f.yaml:2:2: YAML syntax error: "),
        ("a: b: c\n", "f.yaml:1:5: YAML syntax error: mapping values are not allowed here"),
        ("a:\n  - x\n  y: 1\n", "f.yaml:3:3: YAML syntax error: "),
        ("a: 'open\n", "f.yaml:2:1: YAML syntax error: "),
        ("a: *nowhere\n", "f.yaml:1:4: YAML syntax error: found undefined alias 'nowhere'"),
        ("a: 1\n---\nb: 2\n", "f.yaml:2:1: YAML syntax error: expected a single document"),
        ("a:\n\tb: 1\n", "f.yaml:2:1: YAML syntax error: "),
    ],
)
def test_yaml_syntax_error_is_located(text: str, expected: str) -> None:
    (message,) = errors(text)
    assert message.startswith(expected)
    assert "\n" not in message


def test_control_character_is_located_on_its_line() -> None:
    (message,) = errors("a: 1\nbb: x\x00y\n")
    assert message == (
        "f.yaml:2:6: YAML error: character #x0000 is not allowed: "
        "special characters are not allowed"
    )


@pytest.mark.parametrize("text", ["", "\n\n", "  \n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    assert errors(text) == ["f.yaml:1:1: the file is empty"]


def test_an_empty_document_is_null_not_an_error() -> None:
    # '---' alone is a document holding null; parse_document then asks for a mapping.
    assert load("---\n").data is None


def test_merge_key_is_refused() -> None:
    assert errors(
        """
        base: &base {ring: 20s}
        desk:
          endpoint: PJSIP/desk
          <<: *base
        """
    ) == ["f.yaml:4:3: merge keys '<<' are not supported"]


def test_non_scalar_key_is_refused() -> None:
    assert errors("? [a, b]\n: 1\n") == ["f.yaml:1:3: a key must be a plain value"]


def test_plain_aliases_are_expanded_with_their_positions() -> None:
    doc = load(
        """
        hours: &h ["08:00-12:00"]
        mon: *h
        """
    )
    assert doc.data == {"hours": ["08:00-12:00"], "mon": ["08:00-12:00"]}
    assert doc.values[("mon", 0)] == Mark(1, 12)  # where the anchored node is written


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &x [*x]\n", "f.yaml:1:4: an alias cannot refer to a collection that contains it"),
        (
            "a: 1\nb: &x {c: [1, *x]}\n",
            "f.yaml:2:4: an alias cannot refer to a collection that contains it",
        ),
    ],
)
def test_recursive_alias_is_an_error_not_a_crash(text: str, expected: str) -> None:
    assert errors(text) == [expected]


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    n = sys.getrecursionlimit() + 10
    assert errors("[" * n + "]" * n) == ["f.yaml:1:1: YAML error: nesting too deep"]
    assert errors("a: " + "{b: " * n + "}" * n) == ["f.yaml:1:1: YAML error: nesting too deep"]


def test_a_lone_surrogate_in_text_is_an_error_not_a_crash() -> None:
    (message,) = errors("a: \ud800\n")
    assert message.startswith("f.yaml:1:4: YAML error: character #xd800")


def test_digest_follows_the_content() -> None:
    a, b, c = load_text("a: 1\n", "x"), load_text("a: 1\n", "y"), load_text("a: 2\n", "x")
    assert a.digest == b.digest != c.digest
    assert len(a.digest) == 12


# -- files ----------------------------------------------------------------------------------


def test_load_file_reads_utf8_and_keeps_the_path(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text("description: Accueil du cabinet médical\n", encoding="utf-8")
    doc = load_file(path)
    assert doc.file == str(path)
    assert doc.data == {"description": "Accueil du cabinet médical"}


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert load_file(path).data == {"a": "1"}


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: médecin\n".encode("latin-1"))
    with pytest.raises(FlowError) as info:
        load_file(path)
    (d,) = info.value.diagnostics
    assert (d.file, d.line, d.col) == (str(path), 1, 1)
    assert d.message.startswith("not UTF-8 text")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(FlowError) as info:
        load_file(path)
    assert str(info.value) == f"{path}:1:1: cannot read: No such file or directory"


def test_syntax_error_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nsteps: [\n", encoding="utf-8")
    with pytest.raises(FlowError) as info:
        load_file(path)
    assert str(info.value).startswith(f"{path}:3:1: YAML syntax error")


# -- bounded: a hostile or broken file cannot freeze the daemon ------------------------------


def billion_laughs() -> str:
    """The classic 474-byte alias bomb: 9 levels of 9 aliases, 9^9 strings once expanded."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    body = "\n".join(lines) + "\n"
    return "#" + " " * (474 - len(body) - 2) + "\n" + body


def test_a_billion_laughs_file_is_refused_at_once_with_its_line(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    assert bomb.stat().st_size == 474
    with pytest.raises(FlowError) as info:
        load_file(bomb)
    [d] = info.value.diagnostics
    assert d.file == str(bomb) and d.line > 1
    assert "alias expansions" in d.message


def test_a_file_with_too_many_values_is_refused() -> None:
    text = "numbers: [" + ",".join(["1"] * (loader.MAX_NODES + 1)) + "]\n"
    [err] = errors(text)
    assert err.startswith("f.yaml:1:") and f"more than {loader.MAX_NODES} values" in err


def test_a_file_too_large_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * loader.MAX_BYTES + "\n")
    with pytest.raises(FlowError) as info:
        load_file(big)
    assert "file too large" in str(info.value.diagnostics[0])


def test_a_few_aliases_are_still_fine() -> None:
    doc = load(
        """
        common: &ring {ring: 20s}
        a: *ring
        b: *ring
        """
    )
    assert doc.data["a"] == doc.data["b"] == {"ring": "20s"}
