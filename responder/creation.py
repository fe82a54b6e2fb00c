"""The write stage: check a created or changed VM against the enrolment prerequisites.

Runs once per vmId, and again only when the image or the extensions change (a
fingerprint in the ledger), because ARM sends a `write` for every tag or size
change. Findings go to the ledger (replacing the last check's), to the log (one
line each), and, when a topic is configured, to Event Grid as a custom event.
A Windows VM's check also queues the device-side check (`responder.device_check`),
which runs once the VM's device has enrolled in Intune.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from responder import arm_documents
from responder.composition import Services
from responder.errors import AccessDenied
from responder.events import VmEvent
from responder.facts import Gone, HostPool, ImageDefinition, ImageReference, Unreadable, VmFacts
from responder.model import Finding, VmRecord
from responder.observe import adopt_incarnation
from responder.os_identity import identify_os
from responder.pipeline import Work
from responder.prerequisites import PREREQUISITE_RULE_IDS, CheckFacts, cannot_enrol, check
from responder.scope import opted_out
from responder.vm_checks import read_host_pool, report_findings


def fingerprint(facts: VmFacts) -> str:
    """What the rules depend on that a later `write` may change."""
    image = facts.image
    material = {
        "vm_id": facts.vm_id,
        # A shared or community gallery image stands where a gallery image's id would (earlier fingerprints hold).
        "image": [image.publisher, image.offer, image.sku, image.id or _located_image(image)] if image else None,
        "extensions": sorted(f"{extension.publisher}/{extension.type}".lower() for extension in facts.extensions),
        "os_disk": facts.os_disk_create_option,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def _located_image(image: ImageReference) -> str | None:
    return image.shared_gallery_image_id or image.community_gallery_image_id


async def creation_stage(event: VmEvent, record: VmRecord, services: Services) -> Work:
    """The stage of `on_vm_created`: the check, its findings as the event line's actions."""
    summary, findings = await check_written_vm(event, record, services)
    return Work(summary, tuple(f"{finding.severity} {finding.rule_id}: {finding.message}" for finding in findings))


async def check_written_vm(event: VmEvent, record: VmRecord, services: Services) -> tuple[str, tuple[Finding, ...]]:
    """Check the VM the event names (`record`: the ledger row the event produced); returns a summary and findings."""
    facts = await services.compute.get_vm(event.vm)
    if isinstance(facts, Gone):
        return "the VM no longer exists", ()
    if opted_out(facts.tags, services.settings):
        # Remembered, so the cleanup after a deletion leaves this VM's records alone too.
        await services.ledger.update(
            event.vm, lambda current: (replace(adopt_incarnation(current, facts), opted_out=True), None)
        )
        return "the VM carries the opt-out tag: not checked", ()
    checked = fingerprint(facts)
    if record.check_fingerprint == checked:
        return "already checked; image and extensions unchanged", record.findings
    # A read ARM refuses (403: a gallery or host pool where the app has no role) is a finding, not a failure.
    definition = await _image_definition(facts, services)
    pool = await read_host_pool(facts, services)
    findings = tuple(
        check(
            CheckFacts(
                vm=facts,
                image_definition=definition if isinstance(definition, ImageDefinition) else None,
                host_pool=pool if isinstance(pool, HostPool) else None,
                image_unreadable=definition if isinstance(definition, Unreadable) else None,
                host_pool_unreadable=pool if isinstance(pool, Unreadable) else None,
                entra_ds_domains=services.settings.entra_ds_domains,
            )
        )
    )

    # The tag's verdict covers the device-side findings already known too.
    device_side = tuple(finding for finding in record.findings if finding.rule_id not in PREREQUISITE_RULE_IDS)
    await report_findings(event.vm, facts.vm_id, findings, device_side, services)
    device_check_due = None
    if facts.vm_id and identify_os(facts).family != "linux" and not cannot_enrol(findings):
        from responder.device_check import queue_device_check  # the follow-up, once the device enrols

        device_check_due = await queue_device_check(event.vm, facts.vm_id, services)

    def remember(current: VmRecord) -> tuple[VmRecord, None]:
        adopted = adopt_incarnation(current, facts)
        kept = tuple(finding for finding in adopted.findings if finding.rule_id not in PREREQUISITE_RULE_IDS)
        updated = replace(adopted, findings=(*kept, *findings), check_fingerprint=checked, opted_out=False)
        if device_check_due is not None:
            updated = replace(updated, device_check_due=device_check_due, device_checked_at=None)
        return updated, None

    # Last: the fingerprint says "checked", so a crash before it repeats the check (and its reports).
    await services.ledger.update(event.vm, remember)
    errors = sum(finding.severity == "error" for finding in findings)
    return f"prerequisite check: {len(findings)} finding(s), {errors} error(s)", findings


async def _image_definition(facts: VmFacts, services: Services) -> ImageDefinition | Unreadable | None:
    """The definition of the VM's gallery image (a gallery's, or one shared directly or to the community)."""
    path = arm_documents.image_definition_path(facts)
    if path is None:
        return None
    try:
        definition = await services.compute.get_image_definition(path)
    except AccessDenied as refused:
        return arm_documents.unreadable(path, refused.message)
    return None if isinstance(definition, Gone) else definition
