"""Repository hygiene a green suite would otherwise miss: merge leftovers in tracked files."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^(<{7}|>{7})( |$)|^={7}$", re.MULTILINE)


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no tracked-file list to check")
    suffixes = {".py", ".md", ".toml", ".yml", ".yaml", ".json", ".sh", ".txt", ".cfg", ".js",
                ".css", ".html"}
    return [ROOT / p for p in out.splitlines() if Path(p).suffix in suffixes or "/" not in p]


def test_no_merge_conflict_markers() -> None:
    files = _tracked_text_files()
    assert files, "git ls-files listed no text files"
    bad = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for m in MARKER.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)!r}")
    assert not bad, "merge conflict markers left in tracked files:\n" + "\n".join(bad)


def test_marker_pattern_finds_a_conflict() -> None:
    sample = "a\n<<<<<<< HEAD\nx\n=======\ny\n>>>>>>> b9510ac (msg)\n"
    assert len(MARKER.findall(sample)) == 3
    assert not MARKER.findall("a ======= b\n=========\n<<<<<<<<\n")
