"""JSON from files with a bounded nesting depth.

Python's `json` recurses once per level of nesting, so a file of 100,000 ``[`` ends in a
RecursionError (a traceback) instead of a one-line error. `loads` counts the nesting first,
outside strings, and refuses anything deeper than `MAX_DEPTH` with `JSONDepthError` (a
ValueError, like json.JSONDecodeError), naming the line and column where the limit is passed.
No file mcepl reads nests deeper than a few levels.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


class JSONDepthError(ValueError):
    """A JSON text nested deeper than allowed."""

    def __init__(self, depth: int, lineno: int, colno: int) -> None:
        super().__init__(f"nested deeper than {depth} levels")
        self.lineno, self.colno = lineno, colno


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise JSONDepthError if brackets outside strings nest deeper than `max_depth`."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot be deeper: the common case, at no cost
    # blank out strings, keeping offsets, so brackets inside them are not counted
    blanked = _STRING.sub(lambda m: " " * len(m.group()), text)
    depth = 0
    for m in _BRACKET.finditer(blanked):
        if m.group() in "[{":
            depth += 1
            if depth > max_depth:
                pos = m.start()
                lineno = text.count("\n", 0, pos) + 1
                colno = pos - (text.rfind("\n", 0, pos) + 1) + 1
                raise JSONDepthError(max_depth, lineno, colno)
        else:
            depth -= 1


def loads(text: str, *, max_depth: int = MAX_DEPTH, **kwargs: Any) -> Any:
    """`json.loads` after `check_depth`; JSONDepthError or json.JSONDecodeError on bad text."""
    check_depth(text, max_depth)
    try:
        return json.loads(text, **kwargs)
    except RecursionError:  # a deeper interpreter limit than ours would allow: say so
        raise JSONDepthError(max_depth, 1, 1) from None
