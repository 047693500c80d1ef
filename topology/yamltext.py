"""A minimal YAML emitter for the generated deployment files (compose, Kubernetes manifests).

Block mappings; lists of scalars on one line when short; lists of mappings as block sequences;
every string double-quoted with JSON escapes (a JSON string is a valid YAML double-quoted
scalar, so nothing is ever read as a number, a boolean or a null by mistake). No PyYAML needed,
and the output only depends on the input, so regenerated files compare byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

_FLOW_WIDTH = 160  # lists of scalars that fit on one line this wide are written [a, b, c]


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(f"cannot write {type(v).__name__} to YAML")


def _value_lines(key: str, val: Any, indent: int) -> list[str]:
    pad = "  " * indent
    if isinstance(val, dict):
        if not val:
            return [f"{pad}{key}: {{}}"]
        return [f"{pad}{key}:", *_mapping_lines(val, indent + 1)]
    if isinstance(val, list):
        if any(isinstance(x, (dict, list)) for x in val):
            return [f"{pad}{key}:", *_sequence_lines(val, indent + 1)]
        flow = f"{pad}{key}: [{', '.join(_scalar(x) for x in val)}]"
        if len(flow) <= _FLOW_WIDTH or not val:
            return [flow]
        return [f"{pad}{key}:", *(f"{pad}  - {_scalar(x)}" for x in val)]
    return [f"{pad}{key}: {_scalar(val)}"]


def _mapping_lines(d: dict[str, Any], indent: int) -> list[str]:
    out: list[str] = []
    for key, val in d.items():
        out.extend(_value_lines(str(key), val, indent))
    return out


def _sequence_lines(items: list[Any], indent: int) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    for item in items:
        if isinstance(item, dict) and item:
            lines = _mapping_lines(item, indent + 1)
            out.append(f"{pad}- {lines[0].lstrip()}")
            out.extend(lines[1:])
        elif isinstance(item, (dict, list)):
            raise TypeError("nested empty or list items are not supported")
        else:
            out.append(f"{pad}- {_scalar(item)}")
    return out


def to_yaml(doc: dict[str, Any]) -> str:
    """YAML text of one document made of dicts (str keys), lists, str, int and bool; a blank
    line between top-level keys."""
    lines: list[str] = []
    for key, val in doc.items():
        if lines:
            lines.append("")
        lines.extend(_value_lines(str(key), val, 0))
    return "\n".join(lines) + "\n"


def to_yaml_stream(docs: list[dict[str, Any]]) -> str:
    """Several documents separated by ``---`` (no blank lines inside a document)."""
    return "---\n".join(
        "\n".join(line for line in to_yaml(d).splitlines() if line) + "\n" for d in docs)
