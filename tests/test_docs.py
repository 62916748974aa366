"""docs/algorithm.md is the algorithm reference the code cites (``docs/algorithm.md §2.4``): its sections must
exist, be numbered once, and every citation in the repository must name one of them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "algorithm.md"
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)
CITATION = re.compile(r"docs/algorithm\.md\s+§(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?")
SECTION_REF = re.compile(r"§(\d+(?:\.\d+)?)")


def _key(number: str) -> tuple[int, ...]:
    return tuple(int(p) for p in number.split("."))


def _sections() -> list[str]:
    return HEADING.findall(DOC.read_text(encoding="utf-8"))


def test_sections_are_numbered_once_in_order():
    numbers = _sections()
    assert len(numbers) == len(set(numbers)), numbers
    assert [_key(n) for n in numbers] == sorted(_key(n) for n in numbers)
    # The numbers the code cites (sections 1.4, 1.7, 2.2-2.10, 3.1, 3.2, 4, 5, 6.1 among them).
    for expected in ["1", "1.4", "1.7", "2", "2.10", "3.1", "3.2", "4", "5", "6.1", "6.3"]:
        assert expected in numbers


def test_references_inside_the_document_resolve():
    numbers = set(_sections())
    refs = SECTION_REF.findall(DOC.read_text(encoding="utf-8"))
    assert refs
    assert sorted(set(refs) - numbers) == []


def test_every_citation_in_the_repository_resolves():
    numbers = set(_sections())
    files = [p for d in ("src", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    files += [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    missing = []
    for path in files:
        for m in CITATION.finditer(path.read_text(encoding="utf-8")):
            missing += [f"{path.relative_to(ROOT)}: §{n}" for n in m.groups() if n and n not in numbers]
    assert missing == []
