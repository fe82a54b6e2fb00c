"""The workbook and the alerts read what the app writes.

Every query (the workbook's items, `infra/monitoring/alerts/*.kql`) is parsed and checked
against the columns Microsoft documents for `AppTraces` and `AppRequests`, with Microsoft's Kusto
language service (npm `@kusto/language-service-next`, run by Node.js). Every alert and the
current-state and failure panels also run offline over what the real functions write
(tests/test_alerts.py, tests/test_workbook.py); for the other panels, every field a query reads
from the JSON log lines is in the lines the local main job writes, with the type it expects.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from localdev import run
from tests.test_local_run import restore_after_the_test

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "infra" / "monitoring"
ANALYZE = Path(__file__).parent / "kql" / "analyze.js"
TABLES = {
    table["table"]: table["columns"]
    for table in (
        json.loads(path.read_text())
        for path in sorted((Path(__file__).parent / "contracts" / "monitor").glob("*.json"))
    )
}
# Run offline over what the real functions write, not only checked here: every alert (tests/test_alerts.py)
# and these panels (tests/test_workbook.py). The other panels' fields are checked against the lines below.
EVALUATED_PANELS = {"marked-now", "last-reconciliation", "failures", "queues"}
CURRENT_STATE_PANELS = {"marked-now", "last-reconciliation"}  # the latest state, whatever the time range
KIND = re.compile(r'tostring\(line\.kind\) == "([\w-]+)"')
FIELD = re.compile(r"(\w+)\(line\.(\w+)\)")


def queries() -> dict[str, str]:
    workbook = json.loads((MONITORING / "workbook.json").read_text())
    found = {item["name"]: item["content"]["query"] for item in workbook["items"] if item["type"] == 3}
    found |= {path.name: path.read_text() for path in sorted((MONITORING / "alerts").glob("*.kql"))}
    return found


def analyze(texts: dict[str, str]) -> dict[str, list[str]]:
    """The Kusto language service's diagnostics per query. A workbook parameter (`{Name}`)
    is replaced by a value first, as the portal does before it runs the query."""
    node = shutil.which("node")
    assert node, "Node.js runs Microsoft's Kusto language service"
    payload = {
        "tables": TABLES,
        "queries": {name: re.sub(r"\{\w+\}", "sample", text) for name, text in texts.items()},
    }
    answer = subprocess.run(
        [node, str(ANALYZE)], input=json.dumps(payload), capture_output=True, text=True, cwd=REPO, check=False
    )
    assert answer.returncode == 0, answer.stderr
    report: dict[str, list[str]] = json.loads(answer.stdout)
    return report


def test_every_workbook_and_alert_query_is_valid_kql_over_app_traces() -> None:
    assert {name: problems for name, problems in analyze(queries()).items() if problems} == {}


def test_the_check_finds_an_unknown_column_and_a_syntax_error() -> None:
    report = analyze({"typo": "AppTraces | where Mesage has 'x'", "cut short": "AppTraces | where"})

    assert any("Mesage" in problem for problem in report["typo"])
    assert report["cut short"] != []


def test_every_alert_query_file_is_deployed_and_every_deployed_one_exists() -> None:
    template = (REPO / "infra" / "modules" / "monitoring.bicep").read_text()
    loaded = set(re.findall(r"loadTextContent\('\.\./monitoring/alerts/([\w-]+\.kql)'\)", template))

    assert loaded == {path.name for path in (MONITORING / "alerts").glob("*.kql")}


def test_the_workbook_filters_by_time_subscription_resource_group_and_vm() -> None:
    workbook = json.loads((MONITORING / "workbook.json").read_text())
    (parameters,) = [item["content"]["parameters"] for item in workbook["items"] if item["type"] == 9]

    assert [parameter["name"] for parameter in parameters] == ["TimeRange", "Subscription", "ResourceGroup", "VmName"]
    panels = {item["name"]: item["content"] for item in workbook["items"] if item["type"] == 3}
    assert {name for name, panel in panels.items() if panel.get("timeContextFromParameter") != "TimeRange"} == (
        CURRENT_STATE_PANELS
    )
    thirty_days = 30 * 24 * 3600 * 1000
    assert all(panels[name]["timeContext"]["durationMs"] >= thirty_days for name in CURRENT_STATE_PANELS)


@pytest.fixture(scope="module")
def local_run_lines() -> list[dict[str, Any]]:
    """The JSON lines the local main job (`./scripts/run-local --enforce`) writes."""
    import logging

    monkeypatch = pytest.MonkeyPatch()
    restore_after_the_test(monkeypatch)
    # A cap of one deletion an hour: the sample VM's two records wait, and the cap says so.
    monkeypatch.setenv("RESPONDER_MAX_DELETIONS_PER_HOUR", "1")
    try:
        records = captured(lambda: run.main(["--json", "--enforce"]), logging.INFO)
    finally:
        monkeypatch.undo()
    return [json.loads(record.getMessage()) for record in records]


@pytest.fixture(scope="module")
def failure_lines() -> list[dict[str, Any]]:
    """The lines of two power events that fail: Graph refuses the identity (403), then answers 500."""
    import asyncio
    import copy
    import logging
    from datetime import UTC, datetime

    from handlers import vm_power
    from responder.decisions.errors import TransientError
    from tests.conftest import handle_as, load_event, sample_in_process

    settings = {"RESPONDER_MODE": "enforce", "RESPONDER_SUPPRESSION_GROUP_ID": "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"}
    product = sample_in_process(settings, lambda: datetime(2026, 11, 21, tzinfo=UTC))
    refused = load_event("eventgrid-vm-deallocate.json")
    failing = copy.deepcopy(refused)
    failing["id"] = "another-vm"
    failing["subject"] = failing["data"]["resourceUri"] = refused["subject"].replace("vm-win11-01", "vm-win10-02")
    for event in (refused, failing):
        product.world.set_power_state(event["subject"], "deallocated")

    async def deliver() -> None:
        product.graph.faults.fail = [403]
        await handle_as(refused, vm_power.ACCEPTS, product.services)
        product.graph.faults.fail = [500]
        with pytest.raises(TransientError):
            await handle_as(failing, vm_power.ACCEPTS, product.services)
        await product.services.aclose()

    return [json.loads(record.getMessage()) for record in captured(lambda: asyncio.run(deliver()), logging.INFO)]


def captured(action: Any, level: int) -> list[Any]:
    """The responder's log records while `action` runs."""
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(level)
    responder = logging.getLogger("responder")
    responder.addHandler(keep)
    before = responder.level
    responder.setLevel(level)
    try:
        action()
    finally:
        responder.removeHandler(keep)
        responder.setLevel(before)
    return records


def test_every_line_the_app_writes_is_one_json_object_of_the_responder(local_run_lines: list[dict[str, Any]]) -> None:
    assert local_run_lines
    assert {(line["log"], line["schema"]) for line in local_run_lines} == {("intune-vm-responder", 1)}


def panels_not_evaluated() -> dict[str, str]:
    workbook = json.loads((MONITORING / "workbook.json").read_text())
    return {
        item["name"]: item["content"]["query"]
        for item in workbook["items"]
        if item["type"] == 3 and item["name"] not in EVALUATED_PANELS
    }


def test_every_field_a_query_reads_is_in_the_lines_the_app_writes_with_its_type(
    local_run_lines: list[dict[str, Any]], failure_lines: list[dict[str, Any]]
) -> None:
    written = local_run_lines + failure_lines
    missing = []
    for name, text in panels_not_evaluated().items():
        kinds = set(KIND.findall(text)) or {line["kind"] for line in written}
        lines = [line for line in written if line["kind"] in kinds]
        if not lines:
            missing.append(f"{name}: no {sorted(kinds)} line")
            continue
        for convert, field in FIELD.findall(text):
            values = [line[field] for line in lines if line.get(field) is not None]
            if not values:
                missing.append(f"{name}: {field} never set in {sorted(kinds)} lines")
            elif convert == "toint" and not all(isinstance(value, int) for value in values):
                missing.append(f"{name}: {field} is not an integer")
            elif convert == "tostring" and not all(isinstance(value, str) for value in values):
                missing.append(f"{name}: {field} is not a string")
    assert missing == []


COMPARED = re.compile(r'tostring\(line\.(\w+)\) (?:==|!=|=~|in) (\([^)]*\)|"[^"]*")')


def test_every_value_a_query_compares_with_is_one_the_app_writes(
    local_run_lines: list[dict[str, Any]], failure_lines: list[dict[str, Any]]
) -> None:
    from responder.decisions.cleanup import Decision
    from responder.decisions.model import Severity
    from responder.stages.pipeline import EventOutcome

    # What the code declares beside what the runs happened to write: rare decisions and outcomes.
    declared: dict[str, set[str]] = {
        "decision": {decision.value for decision in Decision} | {"poisoned", "deferred", "retrying"},
        "outcome": {outcome.value for outcome in EventOutcome},
        "severity": {severity.value for severity in Severity},
        "failure": {"transient", "access-denied", "refused"},
    }
    written: dict[str, set[Any]] = {}
    for line in local_run_lines + failure_lines:
        for name, value in line.items():
            written.setdefault(name, set()).add(value if not isinstance(value, list) else None)
    unknown = []
    for name, text in panels_not_evaluated().items():
        for field, literals in COMPARED.findall(text):
            for literal in re.findall(r'"([^"]*)"', literals):
                if literal not in written.get(field, set()) | declared.get(field, set()):
                    unknown.append(f"{name}: {field} == {literal!r} is never written")
    assert unknown == []
