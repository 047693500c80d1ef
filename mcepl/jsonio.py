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


class JSONLimitError(ValueError):
    """A JSON text beyond what is read: nested too deep, or a number with too many digits.
    `lineno` and `colno` say where (1, 1 when the parser does not tell)."""

    def __init__(self, message: str, lineno: int = 1, colno: int = 1) -> None:
        super().__init__(message)
        self.lineno, self.colno = lineno, colno


class JSONDepthError(JSONLimitError):
    """A JSON text nested deeper than allowed."""

    def __init__(self, depth: int, lineno: int, colno: int) -> None:
        super().__init__(f"nested deeper than {depth} levels", lineno, colno)


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
    """`json.loads` after `check_depth`. Raises json.JSONDecodeError on bad text and
    JSONLimitError (JSONDepthError for nesting) beyond the limits, never anything else for
    any text: Python's own limit on integer digits (4300), which `json` reports as a bare
    ValueError, becomes a JSONLimitError too (found by benchmarks/fuzz.py)."""
    check_depth(text, max_depth)
    try:
        return json.loads(text, **kwargs)
    except json.JSONDecodeError:
        raise
    except RecursionError:  # a deeper interpreter limit than ours would allow: say so
        raise JSONDepthError(max_depth, 1, 1) from None
    except ValueError as exc:
        if type(exc) is not ValueError:
            raise  # the caller's hook refused something (e.g. a duplicate key): its own error
        raise JSONLimitError(" ".join(str(exc).split())[:200]) from None
