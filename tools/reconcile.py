"""One reconciliation pass by hand (`python -m tools reconcile`), and what it decided.

The pass is the product's own (`responder.stages.reconciliation.reconcile`, what the timer runs), with
this process's app settings: it records every VM of the watched subscriptions in the
ledger, aligns power marks, queues device-side checks, and sends each silent Intune VM
record with no VM of its name to the guarded cleanup worker.

What happens to those cleanups depends on the mode:

- audit: they are decided here, at once, by the cleanup worker's own code
  (`process_cleanup`), which in audit mode records each decision and the ids it would
  delete and deletes nothing; so the report shows what the sweep would do. They are not
  left on the app's cleanup queue: a worker configured otherwise (the deployed app in
  enforce mode) must not carry out a preview.
- enforce: they go on the app's cleanup queue like the timer's, for the app's worker
  (its retries, poison queue and blast-radius cap). Nothing else on that queue is
  touched here: working the shared queue from a terminal would take the deletions' own
  cleanups from the app.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from responder.decisions.cleanup import CleanupRequest
from responder.decisions.errors import TransientError
from responder.decisions.settings import Mode
from responder.ports import Services, WorkQueue
from responder.stages.reconciliation import ReconcileSummary, reconcile

QUEUED = "queued"  # enforce mode: on the app's cleanup queue, for its worker
FAILED = "failed"  # audit mode: the decision failed for a reason a later run may not meet


class SweptCleanups:
    """The cleanup queue as the pass sees it: every request it sends is kept, and passed on to
    the app's queue only when `forward` (enforce mode)."""

    def __init__(self, queue: WorkQueue, *, forward: bool) -> None:
        self._queue = queue
        self._forward = forward
        self.sent: list[str] = []
        self.parked: dict[str, str] = {}

    async def send(self, text: str, delay_seconds: int) -> None:
        self.sent.append(text)
        if self._forward:
            await self._queue.send(text, delay_seconds)

    async def send_poison(self, text: str, reason: str) -> None:
        """A cleanup the worker parks: kept with its reason (its audit row says so); forwarded
        to the poison queue only in enforce mode, where the message was the app's."""
        self.parked[text] = reason
        if self._forward:
            await self._queue.send_poison(text, reason)

    async def poison_depth(self) -> int:
        return await self._queue.poison_depth()


@dataclass(frozen=True, slots=True)
class SweptRecord:
    """One silent Intune VM record the orphan sweep sent to the cleanup worker, and its fate."""

    managed_device_id: str
    device_name: str | None
    entra_device_id: str | None
    silent_since: str  # the record's last check-in with Intune, ISO 8601
    event_id: str  # the cleanup's id in the audit table (`reconcile-<record>-<day>`)
    decision: str  # the worker's decision (audit), `queued` (enforce) or `failed`
    reason: str = ""
    actions: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["actions"], document["findings"] = list(self.actions), list(self.findings)
        return document


@dataclass(frozen=True, slots=True)
class PassReport:
    mode: str
    watched_subscriptions: tuple[str, ...]
    summary: ReconcileSummary
    vms_known: int  # VMs of the watched subscriptions the ledger knows after the pass
    swept: tuple[SweptRecord, ...]
    cleanup_queue: str
    audit_table: str

    @property
    def decided_here(self) -> bool:
        return self.mode == Mode.AUDIT.value

    @property
    def failed(self) -> bool:
        return any(record.decision == FAILED for record in self.swept)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "watched_subscriptions": list(self.watched_subscriptions),
            "summary": asdict(self.summary),
            "vms_known": self.vms_known,
            "cleanups_decided_here": self.decided_here,
            "cleanup_queue": self.cleanup_queue,
            "audit_table": self.audit_table,
            "swept": [record.to_json() for record in self.swept],
        }


async def reconcile_by_hand(services: Services) -> PassReport:
    """One pass with `services`; in audit mode, the sweep's cleanups decided at once (see the module)."""
    settings = services.settings
    audit = settings.mode is Mode.AUDIT
    sweep = SweptCleanups(services.cleanup_queue, forward=not audit)
    swept_services = replace(services, cleanup_queue=sweep)
    summary = await reconcile(swept_services)
    swept = [
        await _decide(text, swept_services, sweep) if audit else _queued(CleanupRequest.from_text(text))
        for text in sweep.sent
    ]
    watched = settings.reconcile.watched_subscriptions
    known = 0
    async for record in services.ledger.records():
        if record.ref.subscription_id in watched and record.incarnation.vm_id and record.deleted_at is None:
            known += 1
    return PassReport(
        mode=settings.mode.value,
        watched_subscriptions=tuple(sorted(watched)),
        summary=summary,
        vms_known=known,
        swept=tuple(swept),
        cleanup_queue=settings.cleanup.queue,
        audit_table=settings.cleanup.audit_table,
    )


async def _decide(text: str, services: Services, sweep: SweptCleanups) -> SweptRecord:
    """The cleanup worker's decision on one request, as the app's worker makes it on a first delivery."""
    from responder.stages.cleanup import process_cleanup

    request = CleanupRequest.from_text(text)
    try:
        entry = await process_cleanup(text, 1, services)
    except TransientError as error:  # a first delivery is retried by the host; here it is reported
        return replace(_queued(request), decision=FAILED, reason=f"not decided: {error}")
    reason = entry.reason
    if text in sweep.parked and sweep.parked[text] not in reason:
        reason = f"{reason}: {sweep.parked[text]}" if reason else sweep.parked[text]
    return replace(
        _queued(request), decision=str(entry.decision), reason=reason, actions=entry.actions, findings=entry.findings
    )


def _queued(request: CleanupRequest) -> SweptRecord:
    return SweptRecord(
        managed_device_id=request.device.managed_device_id or "",
        device_name=request.incarnation.computer_name,
        entra_device_id=request.device.entra_device_id,
        silent_since=request.deleted_at.isoformat(),
        event_id=request.event_id,
        decision=QUEUED,
        reason="on the app's cleanup queue: its worker decides and carries it out under its guards",
    )


def report_lines(report: PassReport) -> list[str]:
    """The report for a person: the pass's counts, then each record the orphan sweep sent."""
    summary = report.summary
    audit = report.decided_here
    mode = (
        "audit mode: decided and recorded, nothing changed in Intune or Entra"
        if audit
        else "enforce mode: marks changed, cleanups queued for the app's worker"
    )
    where = (
        "the pass is complete"
        if summary.complete
        else "stopped at RESPONDER_RECONCILE_MAX_ITEMS: the next run (or this command again) continues"
    )
    planned = " (planned)" if audit else ""
    lines = [
        f"reconciliation pass, {mode}",
        f"watched subscriptions: {', '.join(report.watched_subscriptions)}",
        "",
        _count("VMs the ledger knows now", report.vms_known, "every VM of the watched subscriptions is read"),
        _count("  learnt or updated by this pass", summary.recorded, "vmId, computer name, OS disk, opt-out tag"),
        _count("items looked at", summary.checked, f"from item {summary.resumed_from}; {where}"),
        _count(f"power marks set or lifted{planned}", summary.repaired, "a VM whose mark disagreed with its power"),
        _count("drift left alone with a finding", summary.refused, "no device, or none proven the VM's"),
        _count("create-time checks run", summary.create_checks, "Windows VMs never checked at creation"),
        _count("device-side checks queued", summary.device_checks_queued, "Windows VMs whose device was never found"),
        _count("silent Intune VM records swept", summary.queued, "no VM of their name in a watched subscription"),
    ]
    lines.append("")
    if not report.swept:
        lines.append("orphan sweep: no Intune VM record is silent without a VM of its name")
    elif audit:
        lines.append(
            f"orphan sweep: {len(report.swept)} record(s) decided here by the cleanup worker's code, in audit mode "
            f"(audit table {report.audit_table}):"
        )
    else:
        lines.append(
            f"orphan sweep: {len(report.swept)} record(s) queued on {report.cleanup_queue}; the app's cleanup worker "
            f"decides each, and its rows land in {report.audit_table}:"
        )
    lines.extend(_swept_lines(report.swept))
    if audit and report.swept:
        deletions = sum(1 for record in report.swept if record.decision == "delete")
        lines += [
            "",
            f"{deletions} of them would be deleted in enforce mode; nothing was deleted. A record decided today is "
            "decided again by tomorrow's run.",
        ]
    return lines


def _count(label: str, value: int, note: str) -> str:
    return f"  {label:<38} {value:>6}   {note}"


def _swept_lines(swept: Sequence[SweptRecord]) -> list[str]:
    lines = []
    for record in swept:
        name = record.device_name or "-"
        lines.append(
            f"  {name:<20} {record.managed_device_id:<38} silent since {record.silent_since[:10]}  {record.decision}"
        )
        lines.extend(f"      {line}" for line in (record.reason, *record.actions, *record.findings) if line)
    return lines
