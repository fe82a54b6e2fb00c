"""The function app as the Functions host sees it: indexing, bindings, and
direct calls of the real handler functions with `azure.functions` trigger
objects, against Azurite (design §8, §10)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func
import pytest

from handlers._eventgrid import trigger_input
from localdev.azurite import Azurite
from responder.adapters.table_ledger import TableLedger
from responder.decisions.errors import TransientError
from responder.decisions.model import PowerState, VmRef
from responder.decisions.settings import SettingsError
from tests.conftest import ledger_row, load_event

VM = VmRef("6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d", "rg-avd-prod", "vm-win11-01")

Trigger = Callable[[func.EventGridEvent | func.CloudEvent], Awaitable[None]]


@pytest.fixture(scope="session")
def indexed() -> dict[str, Any]:
    """`app.get_functions()` exactly once, as the host does (a second call raises)."""
    from function_app import app

    return {str(function.get_function_name()): function for function in app.get_functions()}


def trigger(indexed: dict[str, Any], name: str) -> Trigger:
    user_function: Trigger = indexed[name].get_user_function()
    return user_function


def test_the_host_indexes_one_function_per_trigger(indexed: dict[str, Any]) -> None:
    assert set(indexed) == {
        "on_vm_created",
        "on_vm_power_changed",
        "on_vm_deleted",
        "on_cleanup_message",
        "on_device_check_message",
        "on_reconcile_timer",
        "on_queue_watch_timer",
    }


@pytest.mark.parametrize("name", ["on_vm_created", "on_vm_power_changed", "on_vm_deleted"])
def test_each_function_binds_an_event_grid_trigger_named_event(indexed: dict[str, Any], name: str) -> None:
    bindings = json.loads(indexed[name].get_raw_bindings()[0])

    assert bindings == {"type": "eventGridTrigger", "direction": "IN", "name": "event"}


def test_the_cleanup_worker_binds_a_queue_trigger_on_the_configured_queue(indexed: dict[str, Any]) -> None:
    bindings = json.loads(indexed["on_cleanup_message"].get_raw_bindings()[0])

    assert bindings == {
        "direction": "IN",
        "type": "queueTrigger",
        "name": "message",
        "queueName": "%RESPONDER_CLEANUP_QUEUE%",
        "connection": "AzureWebJobsStorage",
    }


def test_the_device_check_binds_a_queue_trigger_on_its_own_queue(indexed: dict[str, Any]) -> None:
    bindings = json.loads(indexed["on_device_check_message"].get_raw_bindings()[0])

    assert bindings == {
        "direction": "IN",
        "type": "queueTrigger",
        "name": "message",
        "queueName": "%RESPONDER_DEVICE_CHECK_QUEUE%",
        "connection": "AzureWebJobsStorage",
    }


def test_host_json_decodes_queue_messages_as_the_worker_encodes_them() -> None:
    from pathlib import Path

    from responder.stages.queue_worker import MAX_ATTEMPTS

    queues = json.loads((Path(__file__).parent.parent / "host.json").read_text())["extensions"]["queues"]

    assert queues["messageEncoding"] == "base64"
    assert queues["maxDequeueCount"] == MAX_ATTEMPTS


def test_every_setting_a_binding_names_is_in_the_example_local_settings(indexed: dict[str, Any]) -> None:
    """The host refuses to index a function whose %SETTING% binding expression has no value."""
    import re
    from pathlib import Path

    from responder.decisions.settings import SETTING_NAMES

    example = json.loads((Path(__file__).parent.parent / "local.settings.example.json").read_text())["Values"]
    named = {
        name
        for function in indexed.values()
        for binding in function.get_raw_bindings()
        for name in re.findall(r"%([A-Za-z0-9_]+)%", binding)
    }

    assert named == {"RESPONDER_CLEANUP_QUEUE", "RESPONDER_DEVICE_CHECK_QUEUE", "RESPONDER_RECONCILE_SCHEDULE"}
    assert all(example.get(name) for name in named)
    assert set(example) - {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsFeatureFlags"} <= set(SETTING_NAMES)


INDEX_IN_A_FRESH_INTERPRETER = """
import json, sys
import function_app
names = sorted(function.get_function_name() for function in function_app.app.get_functions())
loaded = sorted(name for name in sys.modules if name.startswith(("responder.", "azure.", "msgraph")))
print(json.dumps({"functions": names, "loaded": loaded}))
"""


def test_indexing_the_app_in_a_fresh_interpreter_reads_no_settings_and_builds_no_client() -> None:
    """What the host does: a new process imports `function_app` and lists its functions. With every
    setting wrong, that must still work; the settings and clients come with the first invocation."""
    import subprocess
    import sys
    from pathlib import Path

    env = {"PATH": "/usr/bin:/bin", "RESPONDER_MODE": "not-a-mode", "RESPONDER_LEDGER_TABLE": "!"}
    completed = subprocess.run(
        [sys.executable, "-c", INDEX_IN_A_FRESH_INTERPRETER],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    indexed = json.loads(completed.stdout.strip().splitlines()[-1])
    assert len(indexed["functions"]) == 7
    assert not [
        name
        for name in indexed["loaded"]
        if name.startswith(("responder.decisions.settings", "responder.composition", "responder.adapters", "msgraph"))
        or name.startswith(("azure.data", "azure.storage", "azure.identity", "azure.core"))
    ]


async def test_a_deallocate_event_is_recorded_in_the_ledger(
    indexed: dict[str, Any], app_env: dict[str, str], ledger: TableLedger
) -> None:
    await trigger(indexed, "on_vm_power_changed")(trigger_input(load_event("eventgrid-vm-deallocate.json")))

    record = await ledger_row(ledger, VM)
    assert record.power_state is PowerState.DEALLOCATED


async def test_a_cloudevents_delivery_takes_the_same_path(
    indexed: dict[str, Any], app_env: dict[str, str], ledger: TableLedger
) -> None:
    await trigger(indexed, "on_vm_deleted")(trigger_input(load_event("cloudevents-vm-delete.json")))

    record = await ledger_row(ledger, VmRef(VM.subscription_id, VM.resource_group, "vm-old-09"))
    assert record.deleted_at is not None


async def test_a_duplicated_delivery_is_recorded_once(
    indexed: dict[str, Any], app_env: dict[str, str], ledger: TableLedger
) -> None:
    event = load_event("eventgrid-vm-deallocate.json")
    on_power = trigger(indexed, "on_vm_power_changed")

    await on_power(trigger_input(event))
    await on_power(trigger_input(event))

    record = await ledger_row(ledger, VM)
    assert record.recent_event_ids.count(event["id"]) == 1


async def test_a_malformed_event_is_dropped_without_raising(
    indexed: dict[str, Any], app_env: dict[str, str], ledger: TableLedger
) -> None:
    event = load_event("eventgrid-vm-deallocate.json")
    event["data"]["resourceUri"] = "not a resource id"
    event["subject"] = "not a resource id"

    await trigger(indexed, "on_vm_power_changed")(trigger_input(event))

    assert [record async for record in ledger.records()] == []


async def test_an_event_for_another_function_is_not_recorded(
    indexed: dict[str, Any], app_env: dict[str, str], ledger: TableLedger
) -> None:
    await trigger(indexed, "on_vm_created")(trigger_input(load_event("eventgrid-vm-deallocate.json")))

    assert await ledger.get(VM) is None


async def test_unreachable_storage_raises_a_transient_error_so_event_grid_retries(
    indexed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, azurite: Azurite
) -> None:
    from localdev.azurite import free_port
    from responder.composition import close_services

    dead = azurite.connection_string.replace(f":{azurite.table_port}/", f":{free_port()}/")
    monkeypatch.setenv("AzureWebJobsStorage", dead)
    monkeypatch.setenv("RESPONDER_LEDGER_TABLE", "unreachable")
    try:
        with pytest.raises(TransientError):
            await trigger(indexed, "on_vm_power_changed")(trigger_input(load_event("eventgrid-vm-deallocate.json")))
    finally:
        await close_services()


async def test_invalid_settings_fail_the_invocation_naming_the_setting(
    indexed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, azurite: Azurite
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("RESPONDER_MODE", "enforse")

    with pytest.raises(SettingsError, match="RESPONDER_MODE"):
        await trigger(indexed, "on_vm_power_changed")(trigger_input(load_event("eventgrid-vm-deallocate.json")))
