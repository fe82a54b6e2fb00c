"""`python -m tools reconcile` (one reconciliation pass by hand, with a report), and the deployment's
first reconciliation (azure.yaml's postdeploy hook calling the Functions admin API).

The command runs against Azurite and the HTTPS Graph/ARM simulators through the real SDK clients,
over the sample estate: a VM deleted before the app came (its Intune record silent since), a
deallocated VM whose event was missed, look-alike records that are not orphans."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from handlers import reconcile_timer
from localdev.azurite import Azurite
from localdev.queue_host import queue_client
from localdev.simulators import Simulators
from responder.adapters.table_ledger import TableLedger
from responder.decisions.model import VmRef
from tools.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, main

REPO = Path(__file__).parent.parent
SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
OLD_VM = VmRef(SUB, "rg-avd-prod", "vm-old-09")
OLD_MANAGED = "7d1e0009-aaaa-4bbb-8ccc-000000000009"  # vm-old-09's Intune record, anchored to it
LOOK_ALIKE_MANAGED = "7d1e0010-aaaa-4bbb-8ccc-000000000010"  # vm-win11-010: no VM of its name, active
TIMER = reconcile_timer.on_reconcile_timer.build().get_function_name()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def run_in_thread(*argv: str) -> tuple[int, str, str]:
    """The command runs its own event loop, as from a terminal."""
    return await asyncio.to_thread(run, *argv)


@pytest.fixture
async def estate(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, table_name: str, simulators: Simulators
) -> Simulators:
    """The sample estate on the day the app is deployed, with the app settings of a deployment."""
    for name, value in {
        "RESPONDER_WATCHED_SUBSCRIPTIONS": SUB,
        "RESPONDER_SUPPRESSION_GROUP_ID": GROUP,
        "RESPONDER_SUPPRESSION_ATTRIBUTE": "7",
        "RESPONDER_RECONCILE_STALE_DAYS": "1",
        "RESPONDER_CLEANUP_QUEUE": f"cli-{table_name[-12:]}",
        "RESPONDER_DEVICE_CHECK_QUEUE": f"cli-checks-{table_name[-12:]}",
        "RESPONDER_AUDIT_TABLE": f"audit{table_name[-12:]}",
    }.items():
        monkeypatch.setenv(name, value)
    simulators.world.delete_vm(OLD_VM.resource_id)  # deleted before the app was deployed: no event
    simulators.world.set_power_state(VmRef(SUB, "rg-avd-prod", "vm-win10-02").resource_id, "deallocated")
    simulators.tenant.managed_devices[LOOK_ALIKE_MANAGED]["lastSyncDateTime"] = datetime.now(UTC).isoformat()
    return simulators


def tenant_state(simulators: Simulators) -> str:
    tenant = simulators.tenant
    return json.dumps([tenant.managed_devices, tenant.devices, tenant.groups, tenant.synced], sort_keys=True)


async def waiting_messages(azurite: Azurite, queue: str) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    async with queue_client(azurite.connection_string, queue) as client:
        try:
            return (await client.get_queue_properties()).approximate_message_count or 0
        except ResourceNotFoundError:  # the app creates the queue with its first message
            return 0


def count(out: str, label: str) -> int:
    """A count of the text report: the number after its label."""
    (line,) = [line for line in out.splitlines() if line.strip().startswith(label)]
    return int(line.strip()[len(label) :].split()[0])


async def test_reconcile_prints_the_counts_of_a_pass_over_the_sample_estate_and_records_every_vm(
    estate: Simulators, ledger: TableLedger
) -> None:
    code, out, err = await run_in_thread("reconcile")

    rows = {record.ref.name: record async for record in ledger.records()}
    vms = {resource_id.rsplit("/", 1)[-1] for resource_id in estate.world.vms}
    assert (code, err) == (EXIT_OK, "")
    assert set(rows) == vms  # Windows and Linux, opted out or not: the app never heard an event of any
    assert all(
        row.incarnation.vm_id and row.incarnation.created_at and row.incarnation.os_disk_id for row in rows.values()
    )
    assert rows["vm-optout-10"].opted_out
    assert out.startswith("reconciliation pass, audit mode")
    assert count(out, "VMs the ledger knows now") == count(out, "learnt or updated by this pass") == len(vms)
    assert count(out, "items looked at") == len(vms) + 9  # every VM, then the 9 Intune records of VMs
    assert count(out, "power marks set or lifted (planned)") == 1  # vm-win10-02, deallocated unheard
    assert count(out, "silent Intune VM records swept") == 1  # vm-old-09's: deleted before the app came
    assert "the pass is complete" in out


async def test_reconcile_in_audit_mode_deletes_nothing_and_shows_what_the_sweep_would_delete(
    estate: Simulators, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tenant_state(estate)

    code, out, _ = await run_in_thread("reconcile")

    assert code == EXIT_OK
    assert tenant_state(estate) == before
    assert [(r.method, r.path) for r in (*estate.graph.served(), *estate.arm.served()) if r.method != "GET"] == []
    assert OLD_MANAGED in estate.tenant.managed_devices
    sweep = out[out.index("orphan sweep:") :]
    assert f"vm-old-09            {OLD_MANAGED}" in sweep
    assert f"audit: would delete Intune managed device {OLD_MANAGED} (vm-old-09)" in sweep
    assert "physicalIds anchor it to this VM" in sweep
    assert "1 of them would be deleted in enforce mode; nothing was deleted" in out
    assert LOOK_ALIKE_MANAGED not in sweep  # active: not swept
    # Nothing is left on the app's cleanup queue for a worker that may be in another mode.
    assert await waiting_messages(azurite, os.environ["RESPONDER_CLEANUP_QUEUE"]) == 0


async def test_reconcile_records_each_sweep_decision_in_the_audit_table_as_the_worker_would(
    estate: Simulators, azurite: Azurite
) -> None:
    from azure.data.tables.aio import TableClient

    await run_in_thread("reconcile")

    async with TableClient.from_connection_string(
        azurite.connection_string, os.environ["RESPONDER_AUDIT_TABLE"]
    ) as table:
        rows = [row async for row in table.list_entities()]
    (cleanup,) = [row for row in rows if row["PartitionKey"] == "cleanup"]
    assert (cleanup["Decision"], cleanup["Mode"]) == ("delete", "audit")
    assert OLD_MANAGED in str(cleanup["Targets"])
    (summary,) = [json.loads(row["Reason"]) for row in rows if row.get("Decision") == "reconcile"]
    assert (summary["queued"], summary["complete"]) == (1, True)


async def test_reconcile_json_is_one_object_with_the_counts_and_the_sweep(estate: Simulators) -> None:
    code, out, _ = await run_in_thread("reconcile", "--json")

    (line,) = out.splitlines()
    report: dict[str, Any] = json.loads(line)
    assert code == EXIT_OK
    assert (report["mode"], report["cleanups_decided_here"], report["watched_subscriptions"]) == ("audit", True, [SUB])
    assert report["vms_known"] == report["summary"]["recorded"] == len(estate.world.vms)
    assert (report["summary"]["queued"], report["summary"]["complete"]) == (1, True)
    ((managed_id, decision, actions),) = [
        (swept["managed_device_id"], swept["decision"], swept["actions"]) for swept in report["swept"]
    ]
    assert (managed_id, decision, len(actions)) == (OLD_MANAGED, "delete", 2)  # the Intune record, its Entra object


async def test_a_second_pass_learns_nothing_new_and_shows_the_days_decision_again(estate: Simulators) -> None:
    await run_in_thread("reconcile")

    code, out, _ = await run_in_thread("reconcile", "--json")

    report = json.loads(out)
    assert code == EXIT_OK
    assert (report["summary"]["recorded"], report["vms_known"]) == (0, len(estate.world.vms))
    assert [swept["decision"] for swept in report["swept"]] == ["delete"]


async def test_reconcile_with_enforce_leaves_the_sweep_to_the_apps_cleanup_worker(
    estate: Simulators, azurite: Azurite
) -> None:
    code, out, _ = await run_in_thread("reconcile", "--enforce")

    assert code == EXIT_OK
    assert out.startswith("reconciliation pass, enforce mode")
    assert f"orphan sweep: 1 record(s) queued on {os.environ['RESPONDER_CLEANUP_QUEUE']}" in out
    assert OLD_MANAGED in estate.tenant.managed_devices  # the app's worker decides it, not this command
    assert await waiting_messages(azurite, os.environ["RESPONDER_CLEANUP_QUEUE"]) == 1
    assert estate.tenant.members_of(GROUP) == ["e0b10002-1111-4222-8333-000000000002"]  # vm-win10-02 marked


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"RESPONDER_MODE": "sometimes"}, "RESPONDER_MODE"),
        ({"RESPONDER_WATCHED_SUBSCRIPTIONS": "not-a-subscription"}, "RESPONDER_WATCHED_SUBSCRIPTIONS"),
        ({"RESPONDER_WATCHED_SUBSCRIPTIONS": ""}, "RESPONDER_WATCHED_SUBSCRIPTIONS is not set"),
        ({"AzureWebJobsStorage": ""}, "storage: set AzureWebJobsStorage__accountName"),
    ],
    ids=["mode", "watched-not-a-guid", "watched-unset", "no-storage"],
)
def test_reconcile_exits_2_with_a_message_on_bad_settings(
    settings: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AzureWebJobsStorage__accountName", "AzureWebJobsStorage__tableServiceUri"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "RESPONDER_MODE": "audit",
        "RESPONDER_WATCHED_SUBSCRIPTIONS": SUB,
        **settings,
    }.items():
        monkeypatch.setenv(name, value)

    code, out, err = run("reconcile")

    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err.startswith("error: ")
    assert named in err
    assert "Traceback" not in err


async def test_reconcile_exits_1_naming_the_missing_role_when_arm_refuses_the_watched_subscription(
    estate: Simulators,
) -> None:
    estate.world.unreadable_scopes.add(f"/subscriptions/{SUB}")  # the identity has no Reader there

    code, out, err = await run_in_thread("reconcile")

    assert code == EXIT_FAILED
    assert "items looked at" in out  # the counts of what it could do
    assert err.startswith("error: the reconciliation pass could not do 2 step(s); the first: list VMs: 403: ")
    assert "'Reader' role" in err
    assert "Traceback" not in err


# --- The deployment's first reconciliation: azure.yaml's postdeploy hook -------------------------

ADMIN_CALL = f"/admin/functions/{TIMER}"


def azure_yaml() -> dict[str, Any]:
    """azure.yaml, parsed by the `yaml` npm package (eemeli/yaml, pinned by package-lock.json)."""
    node = shutil.which("node")
    assert node, "Node.js parses azure.yaml (the yaml package comes with the dev tools)"
    script = "process.stdout.write(JSON.stringify(require('yaml').parse(require('fs').readFileSync(0, 'utf8'))))"
    parsed = subprocess.run(
        [node, "-e", script],
        input=(REPO / "azure.yaml").read_text(),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    document: dict[str, Any] = json.loads(parsed.stdout)
    return document


def postdeploy(shell: str) -> str:
    hook: dict[str, str] = azure_yaml()["hooks"]["postdeploy"][shell]
    return hook["run"]


def test_the_timer_the_hook_runs_is_the_apps_reconciliation_timer() -> None:
    assert TIMER == "on_reconcile_timer"
    assert reconcile_timer.on_reconcile_timer.build().get_trigger().get_binding_name() == "timerTrigger"


@pytest.mark.parametrize("shell", ["posix", "windows"])
def test_both_postdeploy_hooks_run_the_timer_through_the_admin_api_after_the_event_subscriptions(shell: str) -> None:
    script = postdeploy(shell)

    assert script.index("azd provision --no-prompt") < script.index(ADMIN_CALL)
    assert f"https://$host{ADMIN_CALL}" in script or f"https://$hostName{ADMIN_CALL}" in script
    assert "x-functions-key" in script
    assert "az functionapp keys list" in script
    assert "--query masterKey -o tsv" in script
    assert "--query defaultHostName -o tsv" in script
    assert "-d '{}'" in script or "-Body '{}'" in script
    assert "Content-Type: application/json" in script or "-ContentType 'application/json'" in script
    for name in ("AZURE_FUNCTION_APP_NAME", "AZURE_RESOURCE_GROUP", "AZURE_SUBSCRIPTION_ID"):
        assert f"azd env get-value {name}" in script
    assert script.count("First reconciliation skipped: ") == 3
    assert script.rstrip().endswith("exit 0")


def test_the_hook_reads_only_azd_values_the_template_outputs() -> None:
    outputs = set(re.findall(r"^output (\w+) ", (REPO / "infra" / "main.bicep").read_text(), re.MULTILINE))

    assert {"AZURE_FUNCTION_APP_NAME", "AZURE_RESOURCE_GROUP"} <= outputs  # AZURE_SUBSCRIPTION_ID: azd's own


FAKES = {
    # azd: the environment's values from FAKE_<NAME>; provision exits with FAKE_PROVISION_EXIT.
    "azd": """#!/bin/sh
echo "azd $*" >> "$HOOK_LOG"
case "$1 $2" in
  "env get-value") eval "value=\\${FAKE_$3-}"
    if [ -n "$value" ]; then echo "$value"; else echo "ERROR: key '$3' not found" >&2; exit 1; fi ;;
  "provision --no-prompt") exit "${FAKE_PROVISION_EXIT:-0}" ;;
esac
""",
    # az: the master key (FAKE_MASTER_KEY; none: refused, as for a deployer without the right) and host.
    "az": """#!/bin/sh
echo "az $*" >> "$HOOK_LOG"
case "$2 $3" in
  "keys list") if [ -z "$FAKE_MASTER_KEY" ]; then echo "ERROR: (AuthorizationFailed)" >&2; exit 1; fi
    echo "$FAKE_MASTER_KEY" ;;
  "show --subscription") echo "$FAKE_HOST" ;;
esac
""",
    # curl: records its arguments and what it read on stdin, answers FAKE_STATUS.
    "curl": """#!/bin/sh
{ echo "curl $*"; echo "stdin: $(cat)"; } >> "$HOOK_LOG"
printf '%s' "${FAKE_STATUS:-202}"
""",
    "sleep": """#!/bin/sh
echo "sleep $*" >> "$HOOK_LOG"
""",
}


def run_posix_hook(tmp_path: Path, *, fakes: tuple[str, ...] = tuple(FAKES), **env: str) -> tuple[int, str, list[str]]:
    """The posix hook under sh (with -e, as a stricter runner would), with stand-ins for azd, az and curl."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in fakes:
        (tools / name).write_text(FAKES[name])
        (tools / name).chmod(stat.S_IRWXU)
    cat = shutil.which("cat")
    assert cat
    (tools / "cat").symlink_to(cat)  # the only other program on the PATH: no real az, azd or curl is reached
    log = tmp_path / "calls.log"
    log.touch()
    script = tmp_path / "postdeploy.sh"
    script.write_text(postdeploy("posix"))
    values = {
        "FAKE_RESPONDER_CREATE_EVENT_SUBSCRIPTIONS": "",
        "FAKE_AZURE_FUNCTION_APP_NAME": "func-responder-abc",
        "FAKE_AZURE_RESOURCE_GROUP": "rg-responder-prod",
        "FAKE_AZURE_SUBSCRIPTION_ID": SUB,
        "FAKE_HOST": "func-responder-abc.azurewebsites.net",
        "FAKE_MASTER_KEY": "master-key-value",
    }
    completed = subprocess.run(
        ["/bin/sh", "-e", str(script)],
        env={"PATH": str(tools), "HOOK_LOG": str(log), **values, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return completed.returncode, completed.stdout + completed.stderr, log.read_text().splitlines()


def test_the_posix_hook_switches_the_event_subscriptions_on_then_starts_the_first_reconciliation(
    tmp_path: Path,
) -> None:
    code, said, calls = run_posix_hook(tmp_path)

    assert code == 0
    provision = calls.index("azd provision --no-prompt")
    (curl,) = [index for index, call in enumerate(calls) if call.startswith("curl ")]
    assert provision < curl
    url = f"https://func-responder-abc.azurewebsites.net{ADMIN_CALL}"
    assert f"-X POST -H @- -H Content-Type: application/json -d {{}} {url}" in calls[curl]
    assert calls[curl + 1] == "stdin: x-functions-key: master-key-value"
    assert "master-key-value" not in calls[curl]  # never on a command line
    assert f"az functionapp keys list --subscription {SUB} -g rg-responder-prod -n func-responder-abc" in " ".join(
        calls
    )
    assert "First reconciliation started on func-responder-abc (202)" in said


def test_the_posix_hook_skips_the_first_reconciliation_when_the_key_cannot_be_read(tmp_path: Path) -> None:
    code, said, calls = run_posix_hook(tmp_path, FAKE_MASTER_KEY="")

    assert code == 0
    assert "First reconciliation skipped: could not read the master key of func-responder-abc" in said
    assert not [call for call in calls if call.startswith("curl ")]


def test_the_posix_hook_skips_the_first_reconciliation_without_the_azure_cli(tmp_path: Path) -> None:
    code, said, calls = run_posix_hook(tmp_path, fakes=("azd", "curl", "sleep"))

    assert code == 0
    assert "First reconciliation skipped: it needs the Azure CLI (az) and curl" in said
    assert not [call for call in calls if call.startswith("curl ")]


def test_the_posix_hook_tries_five_times_then_lets_the_deployment_succeed(tmp_path: Path) -> None:
    code, said, calls = run_posix_hook(tmp_path, FAKE_STATUS="404")  # the functions not indexed yet, say

    assert code == 0
    assert len([call for call in calls if call.startswith("curl ")]) == 5
    assert calls.count("sleep 15") == 4
    assert "First reconciliation not started: the admin API of func-responder-abc answered 404 five times" in said


def test_the_posix_hook_still_fails_the_deployment_when_the_second_provision_fails(tmp_path: Path) -> None:
    code, _, calls = run_posix_hook(tmp_path, FAKE_PROVISION_EXIT="1")

    assert code == 1
    assert not [call for call in calls if call.startswith(("az ", "curl "))]


def test_the_posix_hook_provisions_only_once(tmp_path: Path) -> None:
    code, _, calls = run_posix_hook(tmp_path, FAKE_RESPONDER_CREATE_EVENT_SUBSCRIPTIONS="true")

    assert code == 0
    assert "azd provision --no-prompt" not in calls
    assert len([call for call in calls if call.startswith("curl ")]) == 1
