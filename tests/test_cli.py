"""`python -m responder classify`: JSON lines out, exit 2 with a message on bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from responder.cli import EXIT_BAD_INPUT, EXIT_OK, main
from tests.conftest import EVENTS

GOOD = sorted(path.name for path in EVENTS.glob("*.json") if not path.name.startswith("malformed-"))
MALFORMED = sorted(path.name for path in EVENTS.glob("malformed-*.json"))


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", [name for name in GOOD if name != "batch-mixed.json"])
def test_classify_prints_one_json_line_per_event(name: str) -> None:
    code, out, err = run("classify", str(EVENTS / name))

    document = json.loads((EVENTS / name).read_text())
    expected = len(document) if isinstance(document, list) else 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert (code, err) == (EXIT_OK, "")
    assert len(lines) == expected
    assert all(line["kind"] for line in lines)


@pytest.mark.parametrize("name", MALFORMED)
def test_classify_exits_2_with_a_message_on_a_malformed_event(name: str) -> None:
    code, out, err = run("classify", str(EVENTS / name))

    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert err.startswith("error: ")


def test_classify_prints_the_good_events_of_a_partly_malformed_batch() -> None:
    code, out, err = run("classify", str(EVENTS / "batch-mixed.json"))

    assert code == EXIT_BAD_INPUT
    assert len(out.splitlines()) == 2
    assert "at index 1" in err


def test_classify_exits_2_when_the_file_cannot_be_read(tmp_path: Path) -> None:
    code, _, err = run("classify", str(tmp_path / "missing.json"))

    assert code == EXIT_BAD_INPUT
    assert "cannot read" in err


def test_the_module_runs_as_a_program() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "responder", "classify", str(EVENTS / "eventgrid-vm-start.json")],
        capture_output=True,
        text=True,
        check=False,
    )

    assert completed.returncode == EXIT_OK, completed.stderr
    assert json.loads(completed.stdout)["kind"] == "started"
