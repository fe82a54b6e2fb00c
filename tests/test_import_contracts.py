"""The import contracts of pyproject.toml ([tool.importlinter]), checked by import-linter.

The folders are the layers: the composition root over the stages and the adapters (which never
import each other), over the ports and the log lines, over the pure decisions, which import no
Azure or Graph SDK and no HTTP client; the product never imports the triggers, the tools or the
local emulators.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *arguments], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_the_import_contracts_hold() -> None:
    result = lint_imports()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_the_checker_sees_an_sdk_import_where_a_contract_forbids_it(tmp_path: Path) -> None:
    """The composition root imports the SDKs (on first use, inside functions): a contract
    forbidding that must break, or the contracts above could pass by seeing nothing."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["responder"]\n'
        "include_external_packages = true\n"
        "[[tool.importlinter.contracts]]\n"
        'name = "no SDK in the composition root"\n'
        'type = "forbidden"\n'
        'source_modules = ["responder.composition"]\n'
        'forbidden_modules = ["azure"]\n'
    )

    result = lint_imports("--config", str(config))

    assert result.returncode != 0
    assert "BROKEN" in result.stdout


def test_the_layers_contract_sees_the_arrows_it_forbids(tmp_path: Path) -> None:
    """The same layers upside down must break: the stages do import the decisions and the ports, so a
    layers contract that passed either way would be seeing nothing."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["responder"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "upside down"\n'
        'type = "layers"\n'
        'containers = ["responder"]\n'
        'layers = ["decisions", "ports | log_lines", "stages | adapters", "composition"]\n'
    )

    result = lint_imports("--config", str(config))

    assert result.returncode != 0
    assert "responder.stages" in result.stdout
