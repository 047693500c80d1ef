"""The README's reference tables stay true: every metrics record field and every built-in
algorithm is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from mcepl.node.record import RoundRecord
from mcepl.registry import ALGORITHMS

README = Path(__file__).resolve().parent.parent / "README.md"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def first_column(table_text: str) -> set[str]:
    names: set[str] = set()
    for line in table_text.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def test_every_record_field_is_documented() -> None:
    documented = first_column(section("Metrics records"))
    fields = {f.name for f in dataclasses.fields(RoundRecord)} - {"stats"}
    assert fields <= documented, f"undocumented record fields: {sorted(fields - documented)}"
    assert documented <= fields, f"documented but not in RoundRecord: {documented - fields}"


def test_algorithm_table_lists_every_builtin_algorithm() -> None:
    builtin = {name for name, cls in ALGORITHMS.items()
               if cls.__module__.startswith("mcepl.node.algorithms.")}
    documented = first_column(section("Algorithms"))
    assert builtin <= documented, f"add a row to README's Algorithms table for " \
                                  f"{sorted(builtin - documented)}"
    assert documented <= set(ALGORITHMS), f"table rows without an algorithm: " \
                                         f"{sorted(documented - set(ALGORITHMS))}"
