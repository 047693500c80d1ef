"""JSON with bounded depth (mcepl/jsonio.py): deep nesting is a ValueError, not a RecursionError,
brackets inside strings do not count, a caller's own error passes through."""

from __future__ import annotations

import json

import pytest

from mcepl import jsonio


def test_deep_nesting_is_refused_with_its_position() -> None:
    text = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(jsonio.JSONDepthError, match="nested deeper than 64 levels") as info:
        jsonio.loads(text)
    assert (info.value.lineno, info.value.colno) == (1, 7 + 63)
    with pytest.raises(RecursionError):  # what plain json does (the bug of issue 11)
        json.loads(text)


def test_depth_at_the_limit_and_brackets_in_strings() -> None:
    assert jsonio.loads("[" * 64 + "]" * 64) is not None
    text = json.dumps({"s": "[" * 1000, "t": ["{" * 500]})
    assert jsonio.loads(text)["s"] == "[" * 1000


def test_huge_integers_and_hook_errors() -> None:
    with pytest.raises(jsonio.JSONLimitError, match="4300 digits"):
        jsonio.loads("1" + "0" * 5000)

    class Mine(ValueError):
        pass

    def hook(pairs):
        raise Mine("no")

    with pytest.raises(Mine):
        jsonio.loads('{"a": 1}', object_pairs_hook=hook)
    with pytest.raises(json.JSONDecodeError):
        jsonio.loads("[1,")
