"""Microsoft's own Event Grid samples of `Microsoft.Resources` events (both schemas), with
their resource turned into a VM, classify as the responder's event table says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from responder.decisions.events import ClassifiedEvent, parse_event
from responder.decisions.model import EventKind

EXAMPLES = Path(__file__).parent / "contracts" / "eventgrid" / "Microsoft.Resources" / "stable" / "2018-01-01"
SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/vm-win11-01"
OPERATION = {  # what a VM's operation of each event type is called
    "write": "Microsoft.Compute/virtualMachines/write",
    "action": "Microsoft.Compute/virtualMachines/deallocate/action",
    "delete": "Microsoft.Compute/virtualMachines/delete",
}
EXPECTED = {
    ("write", "success"): EventKind.CREATED,
    ("action", "success"): EventKind.DEALLOCATED,
    ("delete", "success"): EventKind.DELETED,
}
SAMPLES = sorted((EXAMPLES / "examples").glob("*-schema/resource_*.json"))


def as_vm_event(path: Path) -> tuple[dict[str, Any], str, str]:
    """The sample with its placeholders filled and its resource made a VM of the sample tenant."""
    _, operation, outcome = path.stem.split("_")
    event = json.loads(path.read_text())
    data = event["data"]
    resource = data["resourceUri"]
    text = json.dumps(event).replace(resource, VM).replace("{subscription-id}", SUB)
    text = text.replace("{resource-group}", "rg-avd-prod").replace('"{ID}"', '"b7d7f1a2-0000-4f6e-9a3b-1c2d3e4f5a00"')
    event = json.loads(text)
    event["data"]["operationName"] = OPERATION[operation]
    return event, operation, outcome


def test_every_sample_of_both_schemas_is_here() -> None:
    assert len([p for p in SAMPLES if p.parent.name == "event-grid-schema"]) == 8
    assert len([p for p in SAMPLES if p.parent.name == "cloud-events-schema"]) == 9


@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_microsofts_sample_classifies_as_the_event_table_says(path: Path) -> None:
    event, operation, outcome = as_vm_event(path)

    result = parse_event(event)

    assert isinstance(result, ClassifiedEvent), result
    assert result.kind is EXPECTED.get((operation, outcome), EventKind.IGNORED)
    if result.kind is not EventKind.IGNORED:
        assert result.vm is not None
        assert result.vm.name == "vm-win11-01"
        assert result.correlation_id == event["data"]["correlationId"]


@pytest.mark.parametrize("schema", ["event-grid-schema", "cloud-events-schema"])
def test_microsofts_write_sample_of_a_vm_extension_is_a_write_of_its_vm(schema: str) -> None:
    """A template or the portal writes each extension as its own resource: the event's subject,
    resourceUri and authorization scope name the extension, and the work is its VM's."""
    event, _, _ = as_vm_event(EXAMPLES / "examples" / schema / "resource_write_success.json")
    extension = f"{VM}/extensions/AADLoginForWindows"
    event = json.loads(json.dumps(event).replace(f'{VM}"', f'{extension}"'))
    event["data"]["operationName"] = event["data"]["authorization"]["action"] = (
        "Microsoft.Compute/virtualMachines/extensions/write"
    )

    result = parse_event(event)

    assert isinstance(result, ClassifiedEvent), result
    assert event["subject"] == event["data"]["resourceUri"] == extension
    assert result.kind is EventKind.CREATED
    assert result.vm is not None
    assert result.vm.name == "vm-win11-01"
