"""docs/clinical-safety.md stays true: every hazard names tests, every test it names exists, and
every test written for a hazard (`test_h<N>_...`) belongs to one in the log."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from paths import PROJECT_ROOT

LOG = PROJECT_ROOT / "docs" / "clinical-safety.md"
HAZARD = re.compile(r"^## (H\d+)\. (.+)$", re.MULTILINE)
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
FIELDS = ("**Cause:**", "**Effect:**", "**Severity:**", "**Control:**", "**Tests:**")


def hazards() -> dict[str, str]:
    """Each hazard's id and its section of the log."""
    text = LOG.read_text(encoding="utf-8")
    heads = list(HAZARD.finditer(text))
    ends = [h.start() for h in heads[1:]] + [text.find("\n---", heads[-1].start())]
    return {h.group(1): text[h.start() : end] for h, end in zip(heads, ends, strict=True)}


def defined_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }  # fmt: skip


def test_every_hazard_has_each_part_and_names_tests_that_exist() -> None:
    log = hazards()
    assert len(log) >= 14
    assert list(log) == [f"H{n}" for n in range(1, len(log) + 1)], "numbered in order, once"
    for hazard, section in log.items():
        for part in FIELDS:
            assert part in section, f"{hazard} has no {part}"
        named = NAMED.findall(section)
        assert named, f"{hazard} names no test"
        for file, name in named:
            path = PROJECT_ROOT / file
            assert path.is_file(), f"{hazard}: no {file}"
            assert name in defined_in(path), f"{hazard}: no {name} in {file}"


def test_every_test_written_for_a_hazard_is_in_the_log() -> None:
    log = hazards()
    named = {(file, name) for section in log.values() for file, name in NAMED.findall(section)}
    for path in sorted((PROJECT_ROOT / "tests").glob("test_*.py")):
        for name in defined_in(path):
            found = re.match(r"test_(h\d+)_", name)
            if found is None:
                continue
            hazard = found.group(1).upper()
            assert hazard in log, f"{name} is for {hazard}, which the log does not have"
            where = f"tests/{path.name}"
            assert (where, name) in named, f"{where}::{name} is not named in the log"
            assert f"`{where}::{name}`" in log[hazard], f"{name} is named under another hazard"
