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


MODULES = {
    path.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."): path
    for folder in ("responder", "handlers", "localdev", "tools", "bench")
    for path in (ROOT / folder).rglob("*.py")
    if path.name != "__init__.py"
}
MODULES["function_app"] = ROOT / "function_app.py"


NOT_OURS = {"json.dumps", "data.operationName"}  # the standard library's, and a field of an Event Grid event


def _modules(name: str) -> list[Path]:
    """A module named in full (`responder.stages.power`), or by its last part (`power`: every such module)."""
    if name in MODULES:
        return [MODULES[name]]
    return [path for dotted, path in MODULES.items() if dotted.rsplit(".", 1)[-1] == name]


def _defines(path: Path, name: str) -> bool:
    pattern = rf"^\s*(?:async def|def|class) {re.escape(name)}\b|^\s*{re.escape(name)}\s*[:=]"
    return re.search(pattern, path.read_text(encoding="utf-8"), re.M) is not None


def cited_code_names() -> list[str]:
    """What the design document cites in backticks as code: a file path, a module, or `module.name`."""
    text = DESIGN.read_text(encoding="utf-8")
    return sorted(
        {
            token
            for token in re.findall(r"`([^`\s]+)`", text)
            if re.fullmatch(r"[\w./-]+\.(?:py|bicep|json|toml)", token)
            or re.fullmatch(r"(?:responder|handlers|localdev|tools|bench)(?:\.\w+)+", token)
            or (re.fullmatch(r"[a-z_]+\.[a-z_]\w*", token) is not None and token not in NOT_OURS)
        }
    )


def test_every_code_name_the_design_document_cites_exists() -> None:
    """A moved or renamed module, function or file fails here until the document follows it."""
    missing = []
    for token in cited_code_names():
        if re.fullmatch(r"[\w./-]+\.(?:py|bicep|json|toml)", token):
            if not (ROOT / token).is_file() and not any(ROOT.glob(f"**/{token}")):
                missing.append(token)
            continue
        parts = token.split(".")
        for cut in range(len(parts), 0, -1):  # the longest prefix that is a module; the rest are its names
            paths = _modules(".".join(parts[:cut]))
            if paths:
                if parts[cut:] and not any(_defines(path, parts[cut]) for path in paths):
                    missing.append(token)
                break
        else:
            missing.append(token)
    assert missing == []


def test_the_architecture_diagram_shows_every_module() -> None:
    """Section 8's drawing is the map a newcomer reads: a module added or renamed appears in it."""
    text = DESIGN.read_text(encoding="utf-8")
    section = text[text.index("## 8. Architecture") :]
    diagram = section[section.index("```mermaid") : section.index("```", section.index("```mermaid") + 3)]
    modules = [
        path.stem
        for folder in ("responder", "handlers")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "__init__.py"
    ]
    assert [name for name in sorted(modules) if not re.search(rf"\b{re.escape(name)}\b", diagram)] == []
