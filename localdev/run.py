"""The local main job: the sample events through the real handlers, on loopback.

Starts Azurite and the Graph/ARM simulators (seeded with a sample tenant),
points the app settings at them, replays every sample delivery
in `tests/events/` through the real handler functions (routed as the event
subscription filters would route them), prints what was decided for each
event and the ledger afterwards, and stops everything it started. Audit mode
unless `--enforce` is given. `--failures` (enforce mode) injects what an admin
must hear about: Graph refusing the suppression group's writes (403), an event
Event Grid dead-lettered, and a VM reconciliation can't read; it then prints what
the workbook's panels and the alerts show, run offline over the run's log lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from localdev.arm_sim import ArmWorld
from localdev.azurite import running_azurite
from localdev.graph_sim import GraphTenant
from localdev.queue_host import run_queue_trigger
from localdev.simulators import Simulators, load_seed, running_simulators
from responder.decisions.events import IntakeError, parse_event
from responder.decisions.model import EventKind, FindingSource, PowerState, VmRecord
from responder.decisions.observe import POWER_STATE_AFTER
from responder.decisions.settings import (
    CLEANUP_DELAY_SECONDS,
    DEVICE_CHECK_FIRST_DELAY_SECONDS,
    LEDGER_TABLE,
    MODE,
    STORAGE_CONNECTION_STRING,
    SUPPRESSION_ATTRIBUTE,
    SUPPRESSION_GROUP_ID,
    WATCHED_SUBSCRIPTIONS,
    Mode,
)
from tools.replay import ReplayRow, replay

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "events"

# Real VM events first (both schemas), then batches, then what is filtered out
# or dropped: the report then reads top to bottom like a day in a subscription.
_ORDER = ("eventgrid-vm-", "cloudevents-vm-", "batch-", "cloudevents-", "eventgrid-", "malformed-")


def sample_files(folder: Path = SAMPLES) -> list[Path]:
    def key(path: Path) -> tuple[int, str]:
        rank = next((i for i, prefix in enumerate(_ORDER) if path.name.startswith(prefix)), len(_ORDER))
        return rank, path.name

    return sorted(folder.glob("*.json"), key=key)


def world_follows_events(world: ArmWorld) -> Callable[[Mapping[str, Any]], None]:
    """Make the simulated ARM show what each event reports: by the time Event Grid
    delivers `deallocate`, Azure has deallocated the VM."""

    def apply(raw: Mapping[str, Any]) -> None:
        parsed = parse_event(raw)
        if isinstance(parsed, IntakeError) or parsed.vm is None:
            return
        resource_id = parsed.vm.resource_id
        if resource_id not in world.vms:
            return
        if parsed.kind is EventKind.DELETED:
            world.delete_vm(resource_id)
        elif parsed.kind in POWER_STATE_AFTER:
            world.set_power_state(resource_id, ARM_POWER_STATE[POWER_STATE_AFTER[parsed.kind]])

    return apply


ARM_POWER_STATE = {
    PowerState.DEALLOCATED: "deallocated",
    PowerState.STOPPED: "stopped",
    PowerState.RUNNING: "running",
}


async def run(
    files: Sequence[Path],
    out: TextIO,
    *,
    as_json: bool,
    world: ArmWorld | None = None,
    enrol_late: Callable[[], None] | None = None,
    before_reconcile: Callable[[], Awaitable[None]] | None = None,
) -> list[ReplayRow]:
    """`enrol_late`: the devices that enrol after their VM was created appear (between two device checks);
    `before_reconcile`: what happens between the events and the daily reconciliation (`--failures`)."""
    from azure.functions.timer import TimerRequest

    from handlers.cleanup_worker import on_cleanup_message
    from handlers.device_check import on_device_check_message
    from handlers.queue_watch import on_queue_watch_timer
    from handlers.reconcile_timer import on_reconcile_timer
    from responder.composition import close_services, get_services
    from tools.routes import event_grid_routes

    hook = world_follows_events(world) if world is not None else None
    try:
        rows = await replay(((path.name, path.read_bytes()) for path in files), event_grid_routes(), hook)
        services = await get_services()
        # The cleanup worker, run over the queue the way the Functions host runs it.
        storage = services.settings.storage.connection_string or ""
        await run_queue_trigger(
            storage, services.settings.cleanup.queue, on_cleanup_message.build().get_user_function()
        )
        # The device-side checks: a first look (a device that hasn't enrolled yet is looked for again,
        # later), then the late devices enrol, and the second look finds them.
        checks, device_check = services.settings.device_check, on_device_check_message.build().get_user_function()
        await asyncio.sleep(checks.first_delay_seconds + 0.8)  # the first look's delay
        await run_queue_trigger(storage, checks.queue, device_check)
        if enrol_late is not None:
            enrol_late()
        await asyncio.sleep(2 * checks.first_delay_seconds + 0.8)  # the second look's delay
        await run_queue_trigger(storage, checks.queue, device_check)
        if before_reconcile is not None:
            await before_reconcile()
        # Then the daily reconciliation, once, as its timer would run it.
        await on_reconcile_timer.build().get_user_function()(TimerRequest(past_due=False))
        # And the queue watch: what waits in the poison queues and Event Grid's dead letters.
        await on_queue_watch_timer.build().get_user_function()(TimerRequest(past_due=False))
        records = [record async for record in services.ledger.records()]
        audit = [entry for entry in await services.audit.entries() if entry.get("Decision") != "reconcile"]
    finally:
        await close_services()
    if as_json:
        for row in rows:
            print(json.dumps(row.to_json(), sort_keys=True), file=out)
        for entry in audit:
            print(json.dumps({"cleanup": _audit_json(entry)}, sort_keys=True), file=out)
    else:
        print_report(rows, records, out)
        print_cleanups(audit, out)
    return rows


def _audit_json(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "resource_id": entry.get("ResourceId"),
        "decision": entry.get("Decision"),
        "reason": entry.get("Reason"),
        "actions": json.loads(str(entry.get("Actions", "[]"))),
        "findings": json.loads(str(entry.get("Findings", "[]"))),
    }


def print_cleanups(audit: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    print(f"\ncleanups carried out by the queue worker ({len(audit)}):", file=out)
    for entry in audit:
        item = _audit_json(entry)
        vm = str(item["resource_id"] or "-").rsplit("/", 1)[-1]
        print(f"{vm:<16} {item['decision']:<13} {item['reason']}", file=out)
        for line in (*item["actions"], *item["findings"]):
            print(f"{'':<16}   {line}", file=out)


def print_report(rows: Sequence[ReplayRow], records: Sequence[VmRecord], out: TextIO) -> None:
    print(f"{'event file':<44} {'function':<20} {'outcome':<14} {'vm':<16} why", file=out)
    for row in rows:
        vm = row.resource_id.rsplit("/", 1)[-1] if row.resource_id else "-"
        print(f"{row.source:<44} {row.function or '-':<20} {row.outcome:<14} {vm:<16} {row.reason}", file=out)
        for detail in row.details:
            print(f"{'':<44}   {detail}", file=out)
    print_device_findings(records, out)
    print(f"\nledger after the run ({len(records)} VMs):", file=out)
    print(
        f"{'vm':<16} {'resource group':<16} {'power':<12} {'suppression':<12} {'cleanup':<10} events",
        file=out,
    )
    for record in records:
        events = ", ".join(f"{kind.value}@{moment:%H:%M:%S}" for kind, moment in record.last_event_at.items())
        print(
            f"{record.ref.name:<16} {record.ref.resource_group:<16} {record.power_state.value:<12} "
            f"{record.suppression.value:<12} {record.cleanup_status.value:<10} {events}",
            file=out,
        )


def print_device_findings(records: Sequence[VmRecord], out: TextIO) -> None:
    """What the device-side check found once each VM's device enrolled (the ledger keeps it)."""
    device_side = [(record, f) for record in records for f in record.findings if f.phase is FindingSource.DEVICE]
    print(f"\ndevice-side findings, after enrolment ({len(device_side)}):", file=out)
    for record, finding in device_side:
        print(f"{record.ref.name:<16} {finding.severity:<8} {finding.rule_id:<15} {finding.message}", file=out)


def print_tenant(tenant: GraphTenant, before: set[str], out: TextIO) -> None:
    """The simulated tenant after the run: what is left, what went, who is marked."""
    gone = sorted(before - set(tenant.managed_devices) - set(tenant.devices))
    print("\ntenant after the run:", file=out)
    print(
        f"  Intune managed devices: {len(tenant.managed_devices)}; Entra devices: {len(tenant.devices)}",
        file=out,
    )
    print(f"  deleted records: {', '.join(gone) or 'none'}", file=out)
    for group in tenant.groups.values():
        members = [str(tenant.devices.get(member, {}).get("displayName", member)) for member in group["members"]]
        print(f"  group {group.get('displayName', group['id'])}: {', '.join(members) or 'no members'}", file=out)
    marked = [
        f"{device.get('displayName')}={value}"
        for device in tenant.devices.values()
        for value in [v for v in (device.get("extensionAttributes") or {}).values() if v]
    ]
    print(f"  extension attributes set: {', '.join(marked) or 'none'}", file=out)
    print(f"  sync requests: {len(tenant.synced)}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/run-local", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="deliveries to replay (default: the samples)")
    parser.add_argument("--enforce", action="store_true", help="carry the plan out (default: audit only)")
    parser.add_argument("--json", action="store_true", help="one JSON line per event instead of a table")
    parser.add_argument("--tenant", default="sample", help="tenant seed for the simulators (name or file)")
    parser.add_argument("--verbose", action="store_true", help="also show the handlers' log lines")
    parser.add_argument(
        "--failures",
        action="store_true",
        help="inject a Graph 403, a dead-lettered event and a VM reconciliation can't read (enforce mode), "
        "then show what the workbook and the alerts show",
    )
    args = parser.parse_args(argv)
    # The report already says what each handler decided; its log lines are noise here.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL, stream=sys.stderr)
    files = args.files or sample_files()
    mode = Mode.ENFORCE if args.enforce or args.failures else Mode.AUDIT
    seed = load_seed(args.tenant)
    with running_azurite() as azurite, running_simulators(seed) as simulators:
        os.environ.update(simulators.settings)
        # Suppression by both mechanisms: the tenant's first group, extensionAttribute7.
        if seed.get("groups"):
            os.environ.setdefault(SUPPRESSION_GROUP_ID, seed["groups"][0]["id"])
        os.environ.setdefault(SUPPRESSION_ATTRIBUTE, "7")
        os.environ.setdefault(CLEANUP_DELAY_SECONDS, "0")  # no need to wait an hour on a laptop
        os.environ.setdefault(DEVICE_CHECK_FIRST_DELAY_SECONDS, "1")  # nor a quarter of an hour for an enrolment
        os.environ[STORAGE_CONNECTION_STRING] = azurite.connection_string
        os.environ[LEDGER_TABLE] = f"ledger{uuid.uuid4().hex[:12]}"
        os.environ[MODE] = mode.value
        if seed.get("subscriptionId"):  # reconciliation reads the sample's subscription, as deployed it reads yours
            os.environ.setdefault(WATCHED_SUBSCRIPTIONS, seed["subscriptionId"])
        print(
            f"Azurite on 127.0.0.1 (tables :{azurite.table_port}), Graph at {simulators.graph.url}, "
            f"ARM at {simulators.arm.url}; mode {mode.value}\n",
            file=sys.stderr,
        )
        before = set(simulators.tenant.managed_devices) | set(simulators.tenant.devices)
        late = seed.get("lateEnrolments", {})
        with captured_lines(shown=args.verbose) as lines:
            failures = inject_failures(simulators, azurite.connection_string) if args.failures else None
            asyncio.run(
                run(
                    files,
                    sys.stdout,
                    as_json=args.json,
                    world=simulators.world,
                    enrol_late=lambda: simulators.tenant.enrol(late),
                    before_reconcile=failures,
                )
            )
        if not args.json:
            print_tenant(simulators.tenant, before, sys.stdout)
        if args.failures:
            print_monitoring(lines, sys.stdout, as_json=args.json)
    return 0


def inject_failures(simulators: Simulators, storage: str) -> Callable[[], Awaitable[None]]:
    """Graph refuses every suppression-group write from now on (the app lacks GroupMember.ReadWrite.All);
    before reconciliation, Event Grid dead-letters a delivery and one VM becomes unreadable to the app."""
    faults = simulators.graph.faults
    faults.fail, faults.methods, faults.path_prefix = [403] * 1000, frozenset({"POST", "DELETE"}), "/v1.0/groups/"

    async def before_reconcile() -> None:
        from azure.storage.blob.aio import ContainerClient

        from responder.composition import get_services

        container = (await get_services()).settings.cleanup.dead_letter_container
        async with ContainerClient.from_connection_string(storage, container) as dead_letters:
            if not await dead_letters.exists():
                await dead_letters.create_container()
            await dead_letters.upload_blob(f"{uuid.uuid4()}.json", b"[]", overwrite=True)  # what Event Grid writes
        seed_vm = next(iter(simulators.world.vms))  # reconciliation's ARM read of this VM is refused
        simulators.arm.faults.fail, simulators.arm.faults.path_prefix = [403], _arm_path(simulators.world, seed_vm)

    return before_reconcile


def _arm_path(world: ArmWorld, resource_id: str) -> str:
    """The VM's id as ARM spells it (the SDK's requests use it, the ledger lower-cases it)."""
    return str(world.vms[resource_id].get("id") or resource_id)


@contextlib.contextmanager
def captured_lines(*, shown: bool) -> Iterator[list[dict[str, Any]]]:
    """The responder's JSON lines with the time each was written: the rows App Insights would keep
    (`shown`: also on stderr, as `--verbose` asks)."""
    from datetime import UTC, datetime

    rows: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith('{"log": "intune-vm-responder"'):
                rows.append({"TimeGenerated": datetime.now(UTC), "Message": message, "OperationId": "local-run"})

    responder = logging.getLogger("responder")
    keep, level, propagate = Keep(logging.INFO), responder.level, responder.propagate
    responder.addHandler(keep)
    responder.setLevel(logging.INFO)
    responder.propagate = shown
    try:
        yield rows
    finally:
        responder.removeHandler(keep)
        responder.setLevel(level)
        responder.propagate = propagate


MONITORED_PANELS = ("failures", "last-reconciliation", "queues", "marked-now")


def print_monitoring(lines: list[dict[str, Any]], out: TextIO, *, as_json: bool) -> None:
    """What the workbook's panels and the alerts show over this run's lines (tools/monitoring.py)."""
    from datetime import UTC, datetime

    from tools.monitoring import ALERTS, alert_fires, panel_rows

    tables: dict[str, list[dict[str, Any]]] = {"AppTraces": lines, "AppRequests": []}
    now = datetime.now(UTC)
    firing = {name: alert_fires(alert, tables, now) for name, alert in ALERTS.items()}
    panels = {name: panel_rows(name, tables, now) for name in MONITORED_PANELS}
    if as_json:
        shown = {"alerts": {name: fired for name, fired in firing.items() if fired}, "panels": panels}
        print(json.dumps(shown, sort_keys=True, default=str), file=out)
        return
    print("\nalerts that fire (each for what it names):", file=out)
    for name, fired in firing.items():
        for dimensions in fired:
            named = ", ".join(f"{key}={value}" for key, value in dimensions.items() if value) or "-"
            print(f"  {ALERTS[name]['title']:<70} {named}", file=out)
    for name, rows in panels.items():
        print(f"\nworkbook: {name} ({len(rows)} rows)", file=out)
        for row in rows:
            fields = {key: value for key, value in row.items() if value not in (None, "") and key != "resourceId"}
            print("  " + "; ".join(f"{key}={str(value)[:120]}" for key, value in fields.items()), file=out)


if __name__ == "__main__":
    raise SystemExit(main())
