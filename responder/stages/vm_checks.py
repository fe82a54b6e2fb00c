"""What both prerequisite checks share: the VM's AVD host pool, and where their findings go.

The create-time check (`responder.stages.creation`) and the device-side check
(`responder.stages.device_check`) report the same way: one log line per finding, the
optional tag (its verdict over both checks' findings), the findings topic.
"""

from __future__ import annotations

import logging

from responder.decisions import arm_documents
from responder.decisions.errors import AccessDenied
from responder.decisions.facts import HostPool, Unreadable, VmFacts
from responder.decisions.model import Finding, FindingSource, Severity, VmRef
from responder.log_lines import vm_fields, write
from responder.ports import CheckPorts

AVD_EXTENSION_TYPES = frozenset({"dsc"})  # the AVD host registration (AddSessionHost) runs as DSC


async def report_findings(
    vm: VmRef,
    vm_id: str | None,
    findings: tuple[Finding, ...],
    other_phase: tuple[Finding, ...],
    services: CheckPorts,
    *,
    phase: FindingSource,
) -> None:
    """Where a check's findings go, whichever check it was (`phase`): one log line each, the optional
    tag (its verdict over both checks' findings: `other_phase` are the other check's), the findings
    topic (the check's phase is part of the event's id, so an empty report of each check is its own)."""
    for finding in findings:
        write(
            logging.WARNING if finding.severity == Severity.ERROR else logging.INFO,
            "finding",
            ruleId=finding.rule_id,
            severity=finding.severity,
            message=finding.message,
            evidence=finding.evidence,
            doc=finding.doc,
            phase=finding.phase,
            **vm_fields(vm.resource_id),
        )
    if services.settings.findings_tag:
        await services.compute.merge_tags(vm, {services.settings.findings_tag: verdict((*other_phase, *findings))})
    if services.findings_publisher is not None:
        await services.findings_publisher.publish(vm, vm_id, list(findings), phase=phase)


async def report_news(
    vm: VmRef,
    vm_id: str | None,
    findings: tuple[Finding, ...],
    reported: tuple[Finding, ...],
    *,
    other_phase: tuple[Finding, ...],
    services: CheckPorts,
    first: bool,
    phase: FindingSource,
) -> None:
    """Report a check's findings once. Its first run reports them all (none at all is news too: the
    topic hears the VM was checked); a later run reports only those not reported before (`reported`:
    this check's findings the ledger holds), and one that only lost findings updates the tag alone."""
    if first:
        await report_findings(vm, vm_id, findings, other_phase, services, phase=phase)
        return
    if set(findings) == set(reported):
        return
    new = tuple(finding for finding in findings if finding not in reported)
    kept = tuple(finding for finding in findings if finding in reported)
    if new:
        await report_findings(vm, vm_id, new, (*other_phase, *kept), services, phase=phase)
    elif services.settings.findings_tag:
        await services.compute.merge_tags(vm, {services.settings.findings_tag: verdict((*other_phase, *findings))})


def verdict(findings: tuple[Finding, ...]) -> str:
    """A tag value (at most 256 characters) an admin can filter VMs by in the portal."""
    for severity in ("error", "warning"):
        rules = sorted({finding.rule_id for finding in findings if finding.severity == severity})
        if rules:
            return f"{severity}: {', '.join(rules)}"[:256]
    return "ok"


async def host_pool_of(facts: VmFacts, services: CheckPorts) -> HostPool | None:
    """The session host's pool, for the device check: one ARM refuses to show is None here
    (the create-time check reported it: `read_host_pool`)."""
    pool = await read_host_pool(facts, services)
    return pool if isinstance(pool, HostPool) else None


async def read_host_pool(facts: VmFacts, services: CheckPorts) -> HostPool | Unreadable | None:
    """Only session hosts carry the AVD registration extension; others cost no lookups. A pool
    ARM refuses to show (403: the app has no role where it lives) is `Unreadable`, not a failure."""
    if not any(extension.type.lower() in AVD_EXTENSION_TYPES for extension in facts.extensions):
        return None
    try:
        return await services.compute.find_host_pool(facts)
    except AccessDenied as refused:
        if refused.resource:  # a pool, or its session hosts, ARM refused to show
            return arm_documents.unreadable(refused.resource, refused.message)
        return Unreadable(  # the subscription's pools
            resource_id=f"/subscriptions/{facts.ref.subscription_id}/providers/Microsoft.DesktopVirtualization/hostPools",
            action="Microsoft.DesktopVirtualization/hostPools/read and hostPools/sessionHosts/read",
            scope=f"/subscriptions/{facts.ref.subscription_id}",
            refusal=refused.message,
        )
