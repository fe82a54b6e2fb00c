"""Event intake (design §1): every row classified, everything else ignored with a reason,
malformed input an error value and never an exception."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest

from responder.decisions.events import (
    OPERATION_NAMES,
    OPERATIONS,
    ClassifiedEvent,
    IntakeError,
    Schema,
    parse_event,
    parse_payload,
    vm_ref_from_resource_id,
)
from responder.decisions.model import EventKind
from tests.conftest import EVENTS, load_event

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
EXTENSIONS = "Microsoft.Compute/virtualMachines/extensions"


def vm_id(name: str, group: str = "rg-avd-prod") -> str:
    return f"/subscriptions/{SUB}/resourcegroups/{group}/providers/microsoft.compute/virtualmachines/{name}"


# Every design §1 row, in both delivery schemas.
EVENT_ROWS = [
    ("vm-write", EventKind.CREATED, "vm-win11-01"),
    ("vm-extension-write", EventKind.CREATED, "vm-win11-01"),  # the VM's AADLoginForWindows, minutes later
    ("vm-deallocate", EventKind.DEALLOCATED, "vm-win11-01"),
    ("vm-poweroff", EventKind.POWERED_OFF, "vm-win10-02"),
    ("vm-start", EventKind.STARTED, "vm-win11-01"),
    ("vm-restart", EventKind.STARTED, "vm-win10-02"),
    ("vm-redeploy", EventKind.STARTED, "avd-personal-03"),
    ("vm-delete", EventKind.DELETED, "vm-old-09"),
]


def classified(raw: object) -> ClassifiedEvent:
    result = parse_event(raw)
    assert isinstance(result, ClassifiedEvent), result
    return result


def intake_error(raw: object) -> IntakeError:
    result = parse_event(raw)
    assert isinstance(result, IntakeError), result
    return result


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
@pytest.mark.parametrize(("row", "kind", "vm_name"), EVENT_ROWS)
def test_each_spec_row_is_classified_in_both_schemas(schema: str, row: str, kind: EventKind, vm_name: str) -> None:
    event = classified(load_event(f"{schema}-{row}.json"))

    assert event.kind is kind
    assert event.vm is not None
    assert event.vm.resource_id == vm_id(vm_name)
    assert event.vm.subscription_id == SUB
    assert event.vm.resource_group == "rg-avd-prod"
    assert event.vm.name == vm_name
    assert event.schema is Schema(schema)
    assert event.correlation_id == "5e1f0c9d-2a8b-4c3e-9f7a-0b1c2d3e4f50"
    assert event.event_time.tzinfo is not None


@pytest.mark.parametrize(("row", "kind", "vm_name"), EVENT_ROWS)
def test_both_schemas_carry_the_same_meaning(row: str, kind: EventKind, vm_name: str) -> None:
    grid = classified(load_event(f"eventgrid-{row}.json"))
    cloud = classified(load_event(f"cloudevents-{row}.json"))

    assert (grid.kind, grid.vm, grid.event_time, grid.operation_name) == (
        cloud.kind,
        cloud.vm,
        cloud.event_time,
        cloud.operation_name,
    )


def test_event_time_keeps_the_instant_of_a_seven_digit_timestamp() -> None:
    event = classified(load_event("eventgrid-vm-deallocate.json"))

    assert event.event_time == datetime(2026, 11, 20, 19, 0, 2, 555000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sample", "reason_fragment"),
    [
        ("eventgrid-vm-write-failure.json", "ResourceWriteFailure"),
        ("eventgrid-vm-delete-cancel.json", "ResourceDeleteCancel"),
        ("eventgrid-storage-account-write.json", "Microsoft.Storage/storageAccounts/write"),
        ("eventgrid-vmss-instance-deallocate.json", "virtualMachineScaleSets"),
        ("eventgrid-vm-runcommand-action.json", "runCommand/action"),
        ("eventgrid-subscription-validation.json", "SubscriptionValidationEvent"),
    ],
)
def test_anything_else_is_ignored_with_a_reason(sample: str, reason_fragment: str) -> None:
    event = classified(load_event(sample))

    assert event.kind is EventKind.IGNORED
    assert event.ignore_reason is not None
    assert reason_fragment in event.ignore_reason


def test_an_extension_write_is_a_write_of_the_vm_that_has_the_extension() -> None:
    event = classified(load_event("eventgrid-vm-extension-write.json"))

    assert (event.kind, event.vm) == (EventKind.CREATED, vm_ref_from_resource_id(vm_id("vm-win11-01")))
    assert event.operation_name == "Microsoft.Compute/virtualMachines/extensions/write"


@pytest.mark.parametrize(
    ("event_type", "operation", "reason_fragment"),
    [
        ("Microsoft.Resources.ResourceDeleteSuccess", f"{EXTENSIONS}/delete", "needs no"),
        ("Microsoft.Resources.ResourceWriteFailure", f"{EXTENSIONS}/write", "needs no"),
    ],
    ids=["extension deleted", "extension write failed"],
)
def test_other_extension_operations_are_ignored(event_type: str, operation: str, reason_fragment: str) -> None:
    raw = load_event("eventgrid-vm-extension-write.json")
    raw["eventType"], raw["data"]["operationName"] = event_type, operation

    event = classified(raw)

    assert event.kind is EventKind.IGNORED
    assert reason_fragment in (event.ignore_reason or "")


@pytest.mark.parametrize(
    "resource",
    [
        "virtualMachines/vm-win11-01",  # the VM itself, named by an extension's operation
        "virtualMachines/vm-win11-01/runCommands/x",
        "virtualMachines/vm-win11-01/extensions/x/y/z",
        "virtualMachineScaleSets/pool/virtualMachines/3/extensions/x",
    ],
)
def test_an_extension_write_must_name_an_extension_of_a_vm(resource: str) -> None:
    raw = load_event("eventgrid-vm-extension-write.json")
    raw["subject"] = raw["data"]["resourceUri"] = (
        f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/{resource}"
    )

    event = classified(raw)

    assert event.kind is EventKind.IGNORED
    assert "not an extension of a virtual machine" in (event.ignore_reason or "")


def test_a_scale_set_instance_with_a_vm_operation_name_is_not_a_vm() -> None:
    raw = load_event("eventgrid-vm-deallocate.json")
    raw["subject"] = raw["data"]["resourceUri"] = (
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/"
        "virtualMachineScaleSets/pool/virtualMachines/3"
    )

    event = classified(raw)

    assert event.kind is EventKind.IGNORED
    assert "not a virtual machine" in (event.ignore_reason or "")


def test_resource_id_casing_is_normalised() -> None:
    mixed = classified(load_event("eventgrid-vm-deallocate-mixed-case.json"))
    plain = classified(load_event("eventgrid-vm-deallocate.json"))

    assert mixed.kind is EventKind.DEALLOCATED
    assert mixed.vm == plain.vm


def test_resource_uri_falls_back_to_the_subject() -> None:
    raw = load_event("eventgrid-vm-delete.json")
    del raw["data"]["resourceUri"]

    assert classified(raw).vm == classified(load_event("eventgrid-vm-delete.json")).vm


def test_a_trailing_slash_does_not_change_the_vm() -> None:
    assert vm_ref_from_resource_id(vm_id("a") + "/") == vm_ref_from_resource_id(vm_id("a"))


@pytest.mark.parametrize(
    ("sample", "message_fragment"),
    [
        ("malformed-missing-data.json", "without 'data'"),
        ("malformed-wrong-type.json", "'data' must be an object"),
        ("malformed-missing-id.json", "'id'"),
        ("malformed-bad-time.json", "'eventTime'"),
        ("malformed-foreign-subscription.json", "outside the event's topic"),
    ],
)
def test_a_malformed_event_is_an_error_value(sample: str, message_fragment: str) -> None:
    error = intake_error(load_event(sample))

    assert message_fragment in error.message


def test_a_malformed_event_keeps_its_id_for_the_log() -> None:
    assert intake_error(load_event("malformed-wrong-type.json")).event_id == ("d1000000-0002-4000-8000-000000000002")


@pytest.mark.parametrize("raw", [None, 42, "text", ["nested"], {}])
def test_a_non_event_is_an_error_value(raw: object) -> None:
    assert isinstance(parse_event(raw), IntakeError)


def test_an_event_time_without_a_zone_is_an_error() -> None:
    raw = load_event("eventgrid-vm-start.json")
    raw["eventTime"] = "2026-11-21T07:30:00"

    assert "'eventTime'" in intake_error(raw).message


def test_a_missing_operation_name_is_an_error() -> None:
    raw = load_event("eventgrid-vm-start.json")
    del raw["data"]["operationName"]

    assert "operationName" in intake_error(raw).message


def test_an_unknown_cloudevents_version_is_an_error() -> None:
    raw = load_event("cloudevents-vm-start.json")
    raw["specversion"] = "0.3"

    assert "specversion" in intake_error(raw).message


def test_an_action_event_with_a_write_operation_is_not_a_creation() -> None:
    raw = load_event("eventgrid-vm-write.json")
    raw["eventType"] = "Microsoft.Resources.ResourceActionSuccess"

    assert classified(raw).kind is EventKind.IGNORED


def test_unparseable_json_is_one_error() -> None:
    (result,) = parse_payload((EVENTS / "malformed-not-json.json").read_bytes())

    assert isinstance(result, IntakeError)
    assert result.message.startswith("not JSON")


def test_an_empty_batch_is_an_error() -> None:
    (result,) = parse_payload(b"[]")

    assert isinstance(result, IntakeError)


def test_a_batch_keeps_good_events_beside_a_bad_one() -> None:
    results = parse_payload((EVENTS / "batch-mixed.json").read_bytes())

    assert [type(result).__name__ for result in results] == [
        "ClassifiedEvent",
        "IntakeError",
        "ClassifiedEvent",
    ]
    assert isinstance(results[1], IntakeError)
    assert results[1].index == 1
    assert isinstance(results[0], ClassifiedEvent)
    assert results[0].kind is EventKind.CREATED


def test_a_duplicated_delivery_parses_to_equal_events() -> None:
    first, second, other = parse_payload((EVENTS / "batch-duplicated.json").read_bytes())

    assert first == second
    assert first != other


def test_a_cloudevents_batch_is_parsed_event_by_event() -> None:
    results = parse_payload((EVENTS / "cloudevents-batch.json").read_bytes())

    assert [r.kind for r in results if isinstance(r, ClassifiedEvent)] == [
        EventKind.DEALLOCATED,
        EventKind.DELETED,
    ]


def test_user_claims_are_not_carried() -> None:
    event = classified(load_event("eventgrid-vm-delete.json"))

    rendered = json.dumps(event.to_json())
    assert "admin@contoso.example" not in rendered
    assert "Example Admin" not in rendered
    assert "192.0.2.10" not in rendered


def test_parsing_does_not_change_its_input() -> None:
    raw = load_event("eventgrid-vm-write.json")
    before = copy.deepcopy(raw)

    parse_event(raw)

    assert raw == before


def test_every_operation_name_maps_to_its_kind() -> None:
    for kind, names in OPERATION_NAMES.items():
        for name in names:
            assert kind in {k for (_, op), k in OPERATIONS.items() if op == name.lower()}
    assert sum(len(names) for names in OPERATION_NAMES.values()) == len(OPERATIONS)
