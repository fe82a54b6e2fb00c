"""The design document is the reference the code cites: every "design §N" names a section it has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
SOURCES = [*ROOT.glob("*.py"), *ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md")]
for folder in ("responder", "handlers", "localdev", "tests", "bench", "infra"):
    SOURCES += [path for path in (ROOT / folder).rglob("*") if path.suffix in {".py", ".bicep", ".md"}]


def sections() -> dict[int, str]:
    return {int(number): title for number, title in re.findall(r"^## (\d+)\. (.+)$", DESIGN.read_text(), re.M)}


def test_every_design_citation_names_a_section_of_the_design_document() -> None:
    cited = {
        (path.relative_to(ROOT).as_posix(), int(number))
        for path in SOURCES
        if path.is_file() and "contracts" not in path.parts
        for number in re.findall(r"design §(\d+)", path.read_text(encoding="utf-8"))
    }
    assert cited  # the code does cite it
    assert [(path, number) for path, number in sorted(cited) if number not in sections()] == []


def test_the_design_document_covers_what_a_newcomer_needs() -> None:
    titles = " ".join(sections().values()).lower()
    for topic in ("events", "device", "prerequisite", "suppressing", "cleanup", "reconciliation", "modes"):
        assert topic in titles
    for topic in ("architecture", "permissions", "pitfalls", "tests"):
        assert topic in titles


OUTSIDE_CITATION = "SPEC" + " §"  # spelt apart so this file doesn't cite it


def test_nothing_cites_a_specification_the_repository_does_not_hold() -> None:
    citing = [
        path.relative_to(ROOT).as_posix()
        for path in SOURCES
        if path.is_file() and "contracts" not in path.parts and OUTSIDE_CITATION in path.read_text(encoding="utf-8")
    ]
    assert citing == []
