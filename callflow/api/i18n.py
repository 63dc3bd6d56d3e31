"""The practice's page in the daemon's language (``[daemon] language``: fr by default, en).

``static/index.html`` holds ``{{key}}`` placeholders; the server fills them from
``locales/<language>.json`` and hands the same catalog to ``app.js`` in the page (a JSON
data block, which the strict CSP allows: it is never executed).  A key missing from a
catalog is a ``KeyError`` here, and a test checks both catalogs against both files.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from pathlib import Path

LOCALES = Path(__file__).resolve().parent / "locales"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@cache
def catalog(language: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((LOCALES / f"{language}.json").read_text("utf-8"))
    return data


def render_page(template: str, language: str) -> str:
    messages = catalog(language)
    # In a <script> block only "</" could end it early: escape "<" as JSON allows.
    embedded = json.dumps(messages, ensure_ascii=False).replace("<", "\\u003c")

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "lang":
            return language
        if key == "messages":
            return embedded
        return html.escape(messages[key])

    return PLACEHOLDER.sub(fill, template)


__all__ = ["LOCALES", "catalog", "render_page"]
