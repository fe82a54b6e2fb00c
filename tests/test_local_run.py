"""The local main job and its replay engine: real handlers, real Azurite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localdev import run
from responder.decisions.settings import SETTING_NAMES
from tests.conftest import EVENTS
from tools.replay import replay
from tools.routes import event_grid_routes

REPO = Path(__file__).resolve().parent.parent


def restore_after_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local run sets app settings in its own process; undo them after the test."""
    for name in (*SETTING_NAMES, "IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        monkeypatch.setenv(name, "placeholder")  # remembers the value before
        monkeypatch.delenv(name)


async def replayed(*names: str) -> list[tuple[str | None, str]]:
    rows = await replay(((name, (EVENTS / name).read_bytes()) for name in names), event_grid_routes())
    return [(row.function, row.outcome) for row in rows]


async def test_each_event_goes_to_the_function_its_subscription_filter_admits(
    app_env: dict[str, str],
) -> None:
    assert await replayed(
        "eventgrid-vm-write.json",
        "eventgrid-vm-deallocate.json",
        "cloudevents-vm-poweroff.json",
        "eventgrid-vm-redeploy.json",
        "cloudevents-vm-delete.json",
    ) == [
        ("on_vm_created", "recorded"),
        ("on_vm_power_changed", "recorded"),
        ("on_vm_power_changed", "recorded"),
        ("on_vm_power_changed", "recorded"),
        ("on_vm_deleted", "recorded"),
    ]


async def test_a_vms_extension_writes_go_to_the_creation_function_in_both_schemas(app_env: dict[str, str]) -> None:
    assert (
        await replayed(
            "eventgrid-vm-write.json", "eventgrid-vm-extension-write.json", "cloudevents-vm-extension-write.json"
        )
        == [("on_vm_created", "recorded")] * 3
    )


async def test_events_no_filter_admits_are_reported_as_not_delivered(app_env: dict[str, str]) -> None:
    assert (
        await replayed(
            "eventgrid-vm-write-failure.json",
            "eventgrid-storage-account-write.json",
            "eventgrid-vmss-instance-deallocate.json",
            "malformed-not-json.json",
        )
        == [(None, "not-delivered")] * 4
    )


async def test_a_malformed_event_that_passes_the_filter_is_dropped_by_the_handler(
    app_env: dict[str, str],
) -> None:
    assert await replayed("malformed-missing-id.json") == [("on_vm_power_changed", "malformed")]


async def test_every_event_of_a_batch_is_replayed(app_env: dict[str, str]) -> None:
    assert await replayed("batch-duplicated.json") == [
        ("on_vm_power_changed", "recorded"),
        ("on_vm_power_changed", "duplicate"),
        ("on_vm_power_changed", "recorded"),
    ]


def test_the_local_run_replays_every_sample_against_its_own_azurite(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    restore_after_the_test(monkeypatch)

    assert run.main(["--json"]) == 0

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = [line for line in lines if "source" in line]
    cleanups = {
        line["cleanup"]["resource_id"].rsplit("/", 1)[-1]: line["cleanup"] for line in lines if "cleanup" in line
    }
    assert {row["source"] for row in rows} == {path.name for path in EVENTS.glob("*.json")}
    assert cleanups["vm-old-09"]["decision"] == "delete"
    assert cleanups["vm-old-09"]["actions"][0].startswith("audit: would delete Intune managed device")
    assert {row["function"] for row in rows if row["outcome"] == "recorded"} == {
        "on_vm_created",
        "on_vm_power_changed",
        "on_vm_deleted",
    }


def test_the_local_run_prints_a_readable_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    restore_after_the_test(monkeypatch)

    run.main([str(EVENTS / "eventgrid-vm-deallocate.json")])

    report = capsys.readouterr().out
    assert "on_vm_power_changed" in report
    sample_vms = len(json.loads((REPO / "localdev" / "tenants" / "sample.json").read_text())["virtualMachines"])
    assert f"ledger after the run ({sample_vms} VMs)" in report  # reconciliation records every VM it reads
    assert "vm-win11-01" in report


def test_the_local_run_shows_the_device_side_findings_of_a_host_whose_device_enrols_late(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    restore_after_the_test(monkeypatch)

    run.main([str(EVENTS / "eventgrid-vm-create-avd-personal-11.json")])

    report = capsys.readouterr().out
    device_side = report[report.index("device-side findings, after enrolment (4):") :].splitlines()[1:5]
    assert all(line.startswith("avd-personal-11") for line in device_side)
    assert "'Windows - BitLocker' (c0f10001-0000-4000-8000-000000000001)" in device_side[0]
    assert "'Windows health - Secure Boot' (c0c00001-0000-4000-8000-000000000001)" in device_side[1]
    assert "'Corporate Wi-Fi' (c0f10002-0000-4000-8000-000000000002)" in device_side[2]
    # the settings catalog's (Graph beta configurationPolicies), assigned to the host's group
    assert "'Windows - Disk encryption (settings catalog)' (c5c50001-0000-4000-8000-000000000001)" in device_side[3]


def test_the_local_run_with_failures_shows_each_in_the_workbook_and_the_alerts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    restore_after_the_test(monkeypatch)

    assert run.main(["--failures", "--json"]) == 0

    shown = json.loads(capsys.readouterr().out.splitlines()[-1])
    alerts, panels = shown["alerts"], shown["panels"]
    vm = {"vmName": "vm-win11-01", "resourceGroup": "rg-avd-prod"}
    assert {**vm, "role": "GroupMember.ReadWrite.All"} in alerts["access-denied"]
    assert {**vm, "role": "Reader"} in alerts["access-denied"]  # reconciliation's read: the role is the cause
    assert alerts["dead-lettered-events"] == [{"container": "deadletter"}]
    refused = [row for row in panels["failures"] if row["lineKind"] == "action-refused"]
    assert {row["role"] for row in refused} == {"GroupMember.ReadWrite.All"}
    (last,) = panels["last-reconciliation"]
    assert (last["complete"], last["failed"]) == (False, 1)
    assert {row["what"]: row["waiting"] for row in panels["queues"]}["dead-lettered events"] == 1
    assert panels["marked-now"] == []  # every mark was refused: none counts
