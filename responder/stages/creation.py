"""The write stage: check a created or changed VM against the enrolment prerequisites.

Runs once per vmId, and again only when what the rules read changes (the image, the OS
disk, the join and AVD registration extensions: a fingerprint in the ledger), because
ARM sends a `write` for every tag or size change. A template or the portal writes the
VM first and each extension minutes later, as its own operation: an extension's write
(`virtualMachines/extensions/write`) arrives here as a write of its VM, and the check
runs again once the extensions the rules read have landed (another extension's write
changes nothing). Findings go to the ledger (replacing the last check's); the ones not
reported before go to the log (one line each), the tag and, when a topic is configured,
to Event Grid as a custom event. A Windows VM's check also queues the device-side check
(`responder.stages.device_check`), which runs once the VM's device has enrolled; until that
check ends, a VM with neither join extension isn't reported (its extensions may still
land): `judge_finished` runs the rules again when it ends and says so then, once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from responder.decisions import arm_documents
from responder.decisions.errors import AccessDenied
from responder.decisions.events import VmEvent
from responder.decisions.facts import Gone, HostPool, ImageDefinition, ImageReference, Unreadable, VmFacts
from responder.decisions.joins import JOIN_EXTENSION_TYPES, domain_join, entra_join
from responder.decisions.model import Finding, FindingSource, Severity, VmRecord, VmRef
from responder.decisions.observe import adopt_incarnation
from responder.decisions.os_identity import identify_os
from responder.decisions.prerequisites import (
    RULES,
    CheckFacts,
    cannot_enrol,
    check,
)
from responder.decisions.prerequisites import join as join_rule
from responder.decisions.scope import opted_out
from responder.ports import CreationPorts
from responder.stages.matching import installation_since
from responder.stages.vm_checks import AVD_EXTENSION_TYPES, read_host_pool, report_news

if TYPE_CHECKING:  # the stage's result: the device check, which reuses this module's checks, doesn't load it
    from responder.stages.pipeline import Work

# The extensions the create-time rules read (lower-case types): joins and the AVD registration.
RULE_EXTENSION_TYPES = JOIN_EXTENSION_TYPES | AVD_EXTENSION_TYPES


def fingerprint(facts: VmFacts) -> str:
    """What the rules depend on that a later `write` (of the VM, or of one of its extensions) may change."""
    image = facts.image
    read = [extension for extension in facts.extensions if extension.type.lower() in RULE_EXTENSION_TYPES]
    material = {
        "vm_id": facts.vm_id,
        # A shared or community gallery image stands where a gallery image's id would (earlier fingerprints hold).
        "image": [image.publisher, image.offer, image.sku, image.id or _located_image(image)] if image else None,
        # Only the extensions the rules read, and what the join rule reads of them (the Intune mdmId, the domain).
        "extensions": sorted(f"{extension.publisher}/{extension.type}".lower() for extension in read),
        "join": [entra_join(facts.extensions), domain_join(facts.extensions)],
        "os_disk": facts.os_disk_create_option,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def _located_image(image: ImageReference) -> str | None:
    return image.shared_gallery_image_id or image.community_gallery_image_id


async def creation_stage(event: VmEvent, record: VmRecord, services: CreationPorts) -> Work:
    """The stage of `on_vm_created`: the check, its findings as the event line's actions."""
    from responder.stages.pipeline import Work

    summary, findings = await check_written_vm(event, record, services)
    return Work(summary, tuple(f"{finding.severity} {finding.rule_id}: {finding.message}" for finding in findings))


async def check_written_vm(
    event: VmEvent, record: VmRecord, services: CreationPorts
) -> tuple[str, tuple[Finding, ...]]:
    """Check the VM the event names (`record`: the ledger row the event produced); returns a summary and findings."""
    return await check_vm(event.vm, event.event_time, record, services)


async def check_vm(
    vm: VmRef, at: datetime, record: VmRecord, services: CreationPorts
) -> tuple[str, tuple[Finding, ...]]:
    """The create-time check of `vm` as ARM has it now (`at`: when it was written, or when reconciliation
    found it never checked: an estate older than the app, a write event lost); returns a summary and
    findings. A VM Intune can't manage (Windows Server, Pro...) gets no device check: it is never looked for."""
    facts = await services.compute.get_vm(vm)
    if isinstance(facts, Gone):
        return "the VM no longer exists", ()
    since = await installation_since(record, facts, services.compute)
    if opted_out(facts.tags, services.settings):
        # Remembered, so the cleanup after a deletion leaves this VM's records alone too.
        await services.ledger.update(
            vm,
            lambda current: (replace(adopt_incarnation(current, facts, at, since), opted_out=True), None),
        )
        return "the VM carries the opt-out tag: not checked", ()
    checked = fingerprint(facts)
    if record.check_fingerprint == checked:
        return "already checked; the image, OS disk and the extensions the rules read are unchanged", record.findings
    read = await create_time_facts(facts, services)
    # A missing join isn't said while the device-side check that follows may still see the extensions land.
    findings = tuple(check(replace(read, hold_missing_join=True)))
    follows = device_check_follows(facts, findings)
    if not follows:
        findings = tuple(check(read))

    same_vm = record.incarnation.vm_id in {None, facts.vm_id}
    first = not same_vm or record.incarnation.vm_id is None or record.check_fingerprint is None
    reported = () if first else _create_phase(record.findings)
    # The tag's verdict covers the device-side findings already known too.
    device_side = _device_phase(record.findings) if same_vm else ()
    await report_news(
        vm,
        facts.vm_id,
        findings,
        reported,
        other_phase=device_side,
        services=services,
        first=first,
        phase=FindingSource.CREATE,
    )
    device_check_due = None
    if follows and facts.vm_id:
        from responder.stages.device_check import queue_device_check  # the follow-up, once the device enrols

        device_check_due = await queue_device_check(vm, facts.vm_id, services)

    def remember(current: VmRecord) -> tuple[VmRecord, None]:
        adopted = adopt_incarnation(current, facts, at, since)
        kept = _device_phase(adopted.findings)
        updated = replace(adopted, findings=(*kept, *findings), check_fingerprint=checked, opted_out=False)
        if device_check_due is not None:
            updated = replace(updated, device_check_due=device_check_due, device_checked_at=None)
        return updated, None

    # Last: the fingerprint says "checked", so a crash before it repeats the check (and its reports).
    await services.ledger.update(vm, remember)
    errors = sum(finding.severity is Severity.ERROR for finding in findings)
    return f"prerequisite check: {len(findings)} finding(s), {errors} error(s)", findings


async def judge_finished(vm: VmRef, facts: VmFacts, record: VmRecord, enrolled: bool, services: CreationPorts) -> None:
    """The create-time check once the device-side check ends: the VM is as finished as it gets.

    Its extensions' events may have been lost, so the rules run again when what they read changed
    since; and a VM with neither join extension is reported now, unless its device enrolled all the
    same (`enrolled`). Only findings not reported before are reported. A VM never checked at create
    is left to the device-side rules here; reconciliation runs its create-time check (`check_vm`).
    """
    if record.check_fingerprint is None or record.incarnation.vm_id != facts.vm_id:
        return
    since = await installation_since(record, facts, services.compute)
    checked = fingerprint(facts)
    reported = _create_phase(record.findings)
    if checked == record.check_fingerprint:  # only the join rule's answer can differ: no ARM reads needed
        said = CheckFacts(vm=facts, entra_ds_domains=services.settings.entra_ds_domains, hold_missing_join=enrolled)
        join_now = join_rule(said, identify_os(facts))
        findings = tuple(
            finding
            for rule in RULES
            for finding in (join_now if rule is join_rule else [item for item in reported if item.rule_id in rule.ids])
        )
        if set(findings) == set(reported):
            return
    else:
        findings = tuple(check(replace(await create_time_facts(facts, services), hold_missing_join=enrolled)))
    await report_news(
        vm,
        facts.vm_id,
        findings,
        reported,
        other_phase=_device_phase(record.findings),
        services=services,
        first=False,
        phase=FindingSource.CREATE,
    )

    def remember(current: VmRecord) -> tuple[VmRecord, None]:
        if current.incarnation.vm_id != facts.vm_id:
            return current, None  # a later VM holds the row now
        adopted = adopt_incarnation(current, facts, services.clock(), since)
        return replace(adopted, findings=(*_device_phase(adopted.findings), *findings), check_fingerprint=checked), None

    await services.ledger.update(vm, remember)


def device_check_follows(facts: VmFacts, findings: tuple[Finding, ...]) -> bool:
    """A device-side check is queued after this create-time check: a Windows VM Intune can manage."""
    return bool(facts.vm_id) and identify_os(facts).family != "linux" and not cannot_enrol(findings)


async def create_time_facts(facts: VmFacts, services: CreationPorts) -> CheckFacts:
    """What the create-time rules read besides the VM: its gallery image definition and its AVD host pool.
    A read ARM refuses (403: a gallery or host pool where the app has no role) is a finding, not a failure."""
    definition = await _image_definition(facts, services)
    pool = await read_host_pool(facts, services)
    return CheckFacts(
        vm=facts,
        image_definition=definition if isinstance(definition, ImageDefinition) else None,
        host_pool=pool if isinstance(pool, HostPool) else None,
        image_unreadable=definition if isinstance(definition, Unreadable) else None,
        host_pool_unreadable=pool if isinstance(pool, Unreadable) else None,
        entra_ds_domains=services.settings.entra_ds_domains,
    )


def _create_phase(findings: tuple[Finding, ...]) -> tuple[Finding, ...]:
    return tuple(finding for finding in findings if finding.phase is FindingSource.CREATE)


def _device_phase(findings: tuple[Finding, ...]) -> tuple[Finding, ...]:
    """The other checks' findings (device-side, power), which this check keeps as they are."""
    return tuple(finding for finding in findings if finding.phase is not FindingSource.CREATE)


async def _image_definition(facts: VmFacts, services: CreationPorts) -> ImageDefinition | Unreadable | None:
    """The definition of the VM's gallery image (a gallery's, or one shared directly or to the community)."""
    path = arm_documents.image_definition_path(facts)
    if path is None:
        return None
    try:
        definition = await services.compute.get_image_definition(path)
    except AccessDenied as refused:
        return arm_documents.unreadable(path, refused.message)
    return None if isinstance(definition, Gone) else definition
