"""What the deployment ships (issue 29, item 6): the repository's tracked files with `.funcignore`
applied as azd applies it to a `host: function` service (gitignore rules, here through pathspec), and as
Core Tools' own parser reads it. Only the product ships, with every module `function_app.py` imports, and
the functions index from a copy of the shipped files alone. Nothing here times anything: the sizes and
the import cost are `python -m bench.package`'s.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.package import (
    copy_files,
    dynamic_imports,
    first_party_imports,
    funcignore,
    is_product,
    shipped_files,
    tracked_files,
)

REPO = Path(__file__).resolve().parent.parent
DEVELOPMENT_FOLDERS = ["tests", "bench", "localdev", "tools", "infra", "docs", "scripts", ".ci"]
# What a working tree holds besides the tracked files: none of it may ship.
LOCAL_STATE = [
    ".venv/bin/python",
    ".venv/lib/python3.13/site-packages/azure/functions/__init__.py",
    ".venv-checkov/bin/checkov",
    "node_modules/azurite/package.json",
    ".python_packages/lib/site-packages/aiohttp/__init__.py",
    "__pycache__/function_app.cpython-313.pyc",
    "responder/__pycache__/model.cpython-313.pyc",
    "responder/adapters/__pycache__/graph.cpython-313.pyc",
    "handlers/__pycache__/vm_power.cpython-313.pyc",
    "local.settings.json",
    ".git/HEAD",
    ".azure/responder-prod/.env",
    ".azure/config.json",
    ".env",
    ".vscode/settings.json",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.13/cache.db",
    ".ruff_cache/CACHEDIR.TAG",
    ".hypothesis/examples/0a/1b",
    ".import_linter_cache/responder.data.json",
    ".bench/python3.11/bin/python",
    "__azurite_db_table__.json",
    "__blobstorage__/0a1b",
    "__queuestorage__/0a1b",
]


def core_tools_denies(lines: list[str]) -> Callable[[str], bool]:
    """`.funcignore` as Azure Functions Core Tools reads it (src/Cli/func/Common/GitIgnoreParser.cs, a
    port of the npm gitignore-parser): a leading "/" is dropped, every pattern becomes a regular expression
    matched from the start of the path ("**" any characters, "*" any but "/") and ending at a word
    boundary, and a path is left out when a pattern matches and no "!" pattern does."""

    def expression(patterns: list[str]) -> re.Pattern[str]:
        if not patterns:
            return re.compile("$^")
        alternatives = [
            re.sub(r"[-\[\]/{}()+?.\\^$|]", lambda special: "\\" + special.group(), pattern)
            .replace("**", "(.+)")
            .replace("*", "([^/]+)")
            for pattern in sorted(patterns)
        ]
        return re.compile("^((" + ")|(".join(alternatives) + "))\\b", re.ASCII)

    denied: list[str] = []
    kept: list[str] = []
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        into, pattern = (kept, line[1:]) if line.startswith("!") else (denied, line)
        into.append(pattern.removeprefix("/"))
    positive, negative = expression(denied), expression(kept)
    return lambda path: bool(positive.match(path)) and not negative.match(path)


@pytest.fixture(scope="module")
def shipped() -> list[str]:
    return shipped_files()


def test_what_ships_is_the_product_and_nothing_else(shipped: list[str]) -> None:
    assert {"function_app.py", "host.json", "requirements.txt"} <= set(shipped)
    assert [path for path in shipped if not is_product(path)] == []
    assert [path for path in tracked_files() if is_product(path) and path not in shipped] == []


def test_every_first_party_module_function_app_imports_ships(shipped: list[str]) -> None:
    reached, unresolved = first_party_imports()

    assert unresolved == []
    # Lazy imports inside functions are followed too: the composition root and the adapters load on the
    # first invocation, never at indexing.
    assert {"handlers.vm_power", "responder.composition", "responder.adapters.graph"} <= set(reached)
    assert sorted(set(reached.values()) - set(shipped)) == []


def test_the_product_imports_nothing_by_a_computed_name(shipped: list[str]) -> None:
    """modulefinder follows import statements; a module imported by name at run time would escape it."""
    assert dynamic_imports(REPO, shipped) == []


@pytest.mark.parametrize("folder", DEVELOPMENT_FOLDERS)
def test_nothing_of_a_development_folder_ships(shipped: list[str], folder: str) -> None:
    assert any(path.startswith(f"{folder}/") for path in tracked_files())  # the folder is there to leave out
    assert [path for path in shipped if path.startswith(f"{folder}/")] == []


@pytest.mark.parametrize("path", LOCAL_STATE)
def test_local_state_is_left_out_by_azd_and_by_core_tools(path: str) -> None:
    lines = (REPO / ".funcignore").read_text().splitlines()

    assert funcignore().match_file(path)
    assert core_tools_denies(lines)(path)


def test_core_tools_ships_what_azd_ships(shipped: list[str]) -> None:
    """Core Tools' parser is not gitignore (an allow-list of "*" and "!" lines is reported to ship nothing
    there, Azure/azure-functions-core-tools issue 4240): the file is written so that both read it alike."""
    denies = core_tools_denies((REPO / ".funcignore").read_text().splitlines())

    assert [path for path in tracked_files() if not denies(path)] == shipped


def test_the_working_tree_ships_none_of_its_local_state() -> None:
    """This checkout as azd walks it, untracked files included (a folder left out is not entered)."""
    spec = funcignore()
    walked: list[str] = []
    for folder, folders, files in os.walk(REPO):
        relative = Path(folder).relative_to(REPO)
        folders[:] = [name for name in folders if not spec.match_file(f"{(relative / name).as_posix()}/")]
        walked += [(relative / name).as_posix() for name in files if not spec.match_file((relative / name).as_posix())]

    left_out = {*DEVELOPMENT_FOLDERS, ".venv", ".venv-checkov", "node_modules", ".git", ".azure", ".python_packages"}
    assert [path for path in walked if path.split("/")[0] in left_out] == []
    assert [path for path in walked if "__pycache__" in path.split("/") or path.endswith(".pyc")] == []
    assert [path for path in walked if path.endswith("local.settings.json")] == []


INDEX = """
import json, sys
import function_app
functions = {str(f.get_function_name()): list(f.get_raw_bindings()) for f in function_app.app.get_functions()}
files = sorted({getattr(module, "__file__", None) or "?" for name, module in list(sys.modules.items())
                if name.split(".")[0] in {"function_app", "handlers", "responder"}})
print(json.dumps({"functions": functions, "files": files}))
"""


def index(folder: Path) -> dict[str, Any]:
    """What the host does in `folder`: a new process imports `function_app` and lists its functions."""
    completed = subprocess.run(
        [sys.executable, "-c", INDEX],
        cwd=folder,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    indexed: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return indexed


def test_the_functions_index_from_the_shipped_files_alone(shipped: list[str], tmp_path: Path) -> None:
    copy_files(REPO, shipped, tmp_path)

    from_copy = index(tmp_path)

    assert len(from_copy["functions"]) == 7
    assert from_copy["functions"] == index(REPO)["functions"]
    assert [file for file in from_copy["files"] if not Path(file).resolve().is_relative_to(tmp_path.resolve())] == []
