"""How deeply a JSON or YAML text nests, measured before any parser sees it.

Both parsers recurse (or build a node stack) per level, and PyYAML does it in pure Python: 60 KB of
`[` took seconds of CPU before failing. A rule is a dozen levels deep at most, so one linear pass
over the characters refuses anything deeper than MAX_TEXT_DEPTH first. The count is conservative:
brackets inside quoted strings are skipped, block nesting is measured by indentation and by "- "
markers (YAML's compact nested sequences), so a valid rule is never refused, while a deep text
always is.
"""

from __future__ import annotations

import re

MAX_TEXT_DEPTH = 64

_LEAD = re.compile(r"[ \t]*")
_DASHES = re.compile(r"(?:-[ \t]+)+")
_SCALAR_STARTS = ":,[{-?"


def text_depth_exceeds(text: str, max_depth: int = MAX_TEXT_DEPTH) -> bool:
    """True when the text nests deeper than ``max_depth`` (flow brackets plus block levels)."""
    flow = 0
    quote = ""
    escaped = False
    indents: list[int] = []
    for line in text.splitlines():
        if not quote and flow == 0:
            # Block structure only counts outside flow collections and multi-line strings.
            lead = _LEAD.match(line)
            indent = lead.end() if lead else 0
            rest = line[indent:]
            if rest and not rest.startswith("#"):
                while indents and indents[-1] >= indent:
                    indents.pop()
                indents.append(indent)
                dashes = _DASHES.match(rest)
                extra = dashes.group(0).count("-") if dashes else 0
                if len(indents) + extra > max_depth:
                    return True
        # A quote opens a string only where a scalar starts (YAML's "don't" is plain text); a
        # "#" is a comment only after whitespace.
        prev = " "
        for ch in line:
            if quote:
                if escaped:
                    escaped = False
                elif ch == "\\" and quote == '"':
                    escaped = True
                elif ch == quote:
                    quote = ""
                    prev = ch
                continue
            if ch in "\"'" and (prev in _SCALAR_STARTS or prev.isspace()):
                quote = ch
            elif ch in "[{":
                flow += 1
                if flow + len(indents) > max_depth:
                    return True
            elif ch in "]}":
                flow = max(0, flow - 1)
            elif ch == "#" and prev.isspace():
                break
            prev = ch
    return False
