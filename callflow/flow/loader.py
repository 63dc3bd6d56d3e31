"""YAML loading that remembers where every node came from.

Each value and each mapping key keeps its ``line:col`` so that a schema or graph error
points at the offending node (the idea of Home Assistant's loader).  We resolve scalars
ourselves rather than with YAML 1.1's rules: only ``null``/``~``/empty, ``true`` and
``false`` are special and every other scalar stays a string.  That way a phone number
``0180000000`` keeps its leading zero, ``no`` is not ``False``, ``010`` is not 8 and
``12:30`` is not 750; the schema converts strings to numbers where a number is meant.

A flow file is admin input, but a daemon that reloads it must not be frozen by it: aliases
are expanded here (PyYAML's composer only links nodes), so a few hundred bytes of nested
aliases ("billion laughs") could build gigabytes.  The file size and the number of nodes
built, aliases expanded, are bounded (``MAX_BYTES``, ``MAX_NODES``, ``MAX_ALIASES``): a
real flow is a few thousand nodes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import Diagnostic, FlowError

PathKey = tuple[str | int, ...]

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
#: Limits far above any real flow (the example practice: ~1,500 nodes, 12 kB).
MAX_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_ALIASES = 1_000  # references to an already-defined anchor

_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    col: int  # 1-based


@dataclass
class Document:
    """A loaded YAML document: plain Python data plus the position of every node."""

    file: str
    data: Any
    values: dict[PathKey, Mark] = field(default_factory=dict)
    keys: dict[PathKey, Mark] = field(default_factory=dict)
    digest: str = ""  # short content hash: the version of the flow a call ran on

    def locate(self, path: PathKey, *, key: bool = False) -> Mark:
        """Position of the node at ``path`` (its key when ``key``), else the nearest parent."""
        p = tuple(path)
        if key and p in self.keys:
            return self.keys[p]
        while p:
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), Mark(1, 1))

    def diagnostic(self, path: PathKey, message: str, *, key: bool = False) -> Diagnostic:
        m = self.locate(path, key=key)
        return Diagnostic(self.file, m.line, m.col, message)


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _TooBig(Exception):
    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.errors: list[Diagnostic] = []
        self.open: set[int] = set()  # collections being built: an alias to one is a cycle
        self.seen: set[int] = set()  # collections built once: building one again is an alias
        self.nodes = 0
        self.aliases = 0

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        mark = _mark(node)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(
                mark, f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?)"
            )
        if isinstance(node, yaml.CollectionNode):
            if id(node) in self.seen:
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    msg = f"more than {MAX_ALIASES} alias expansions (of the anchor here)"
                    raise _TooBig(mark, msg)
            self.seen.add(id(node))
        self.doc.values[path] = mark
        if isinstance(node, yaml.CollectionNode):
            if id(node) in self.open:
                m = _mark(node)
                msg = "an alias cannot refer to a collection that contains it"
                self.errors.append(Diagnostic(self.doc.file, m.line, m.col, msg))
                return None
            self.open.add(id(node))
            try:
                return self._collection(node, path)
            finally:
                self.open.discard(id(node))
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node)

    def _collection(self, node: yaml.CollectionNode, path: PathKey) -> Any:
        if isinstance(node, yaml.MappingNode):
            out: dict[Hashable, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    m = _mark(key_node)
                    self.errors.append(
                        Diagnostic(self.doc.file, m.line, m.col, "a key must be a plain value")
                    )
                    continue
                key = self._scalar(key_node)
                if key is None or isinstance(key, bool):
                    key = str(key_node.value)
                if key == "<<":
                    m = _mark(key_node)
                    self.errors.append(
                        Diagnostic(
                            self.doc.file, m.line, m.col, "merge keys '<<' are not supported"
                        )
                    )
                    continue
                if key in out:
                    m = _mark(key_node)
                    first = self.doc.keys[(*path, key)]
                    self.errors.append(
                        Diagnostic(
                            self.doc.file,
                            m.line,
                            m.col,
                            f"duplicate key '{key}' (first defined at line {first.line})",
                        )
                    )
                    continue
                self.doc.keys[(*path, key)] = _mark(key_node)
                out[key] = self.build(value_node, (*path, key))
            return out
        return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]

    @staticmethod
    def _scalar(node: yaml.ScalarNode) -> str | bool | None:
        text = str(node.value)
        if node.style is not None and node.style in "'\"|>":
            return text  # quoted or block scalars are always strings
        if _NULL.match(text):
            return None
        if text in _BOOL:
            return _BOOL[text]
        return text


def load_text(text: str, file: str) -> Document:
    """Parse one YAML document; raise ``FlowError`` with ``file:line:col`` on any problem."""
    data = text.encode(errors="surrogatepass")
    if len(data) > MAX_BYTES:
        size = f"{len(data)} bytes, at most {MAX_BYTES}"
        raise FlowError([Diagnostic(file, 1, 1, f"file too large ({size})")])
    digest = hashlib.sha256(data).hexdigest()[:12]
    doc = Document(file=file, data=None, digest=digest)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{exc.context}: {problem}"
        raise FlowError([Diagnostic(file, line, col, f"YAML syntax error: {problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: locate it in the text
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - before.rfind("\n")
        problem = f"character #x{exc.character:04x} is not allowed: {exc.reason}"
        raise FlowError([Diagnostic(file, line, col, f"YAML error: {problem}")]) from None
    except RecursionError:
        raise FlowError([Diagnostic(file, 1, 1, "YAML error: nesting too deep")]) from None
    except yaml.YAMLError as exc:
        raise FlowError([Diagnostic(file, 1, 1, f"YAML error: {exc}")]) from None
    if node is None:
        raise FlowError([Diagnostic(file, 1, 1, "the file is empty")])
    builder = _Builder(doc)
    try:
        doc.data = builder.build(node, ())
    except _TooBig as exc:
        raise FlowError([Diagnostic(file, exc.mark.line, exc.mark.col, exc.message)]) from None
    except RecursionError:
        raise FlowError([Diagnostic(file, 1, 1, "YAML error: nesting too deep")]) from None
    if builder.errors:
        raise FlowError(builder.errors)
    return doc


def load_file(path: Path) -> Document:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:  # refused before it is read into memory
            msg = f"file too large ({size} bytes, at most {MAX_BYTES})"
            raise FlowError([Diagnostic(str(path), 1, 1, msg)])
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FlowError([Diagnostic(str(path), 1, 1, f"not UTF-8 text: {exc.reason}")]) from None
    except OSError as exc:
        raise FlowError([Diagnostic(str(path), 1, 1, f"cannot read: {exc.strerror}")]) from None
    return load_text(text, str(path))
