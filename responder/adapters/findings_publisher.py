"""Publish prerequisite findings as custom events on an Event Grid topic (azure-eventgrid).

Other automation (ITSM tickets, Teams notices) subscribes to the topic. The app's
managed identity needs the "EventGrid Data Sender" role on the topic; no keys.
azure-eventgrid is imported on the first publication: most events publish nothing,
and their cold start should not pay for it.

Every event's id is deterministic (`event_id`): a redelivery that repeats a check (a storage
fault after the publication, before the ledger recorded it) publishes the same findings under
the same id, so a subscriber drops the copy by id.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from responder.adapters._errors import EVENT_GRID, service_failure
from responder.decisions.model import Finding, FindingSource, VmRef

if TYPE_CHECKING:
    from azure.eventgrid.aio import EventGridPublisherClient

EVENT_TYPE = "IntuneVmResponder.PrerequisiteFindings"
DELETE_IN_AD_EVENT_TYPE = "IntuneVmResponder.DeleteInActiveDirectory"
# uuid5(NAMESPACE_URL, "urn:intune-vm-responder:findings-topic"). Fixed for good: subscribers compare
# ids across versions of the app, so a new namespace would make every republication look new.
EVENT_ID_NAMESPACE = uuid.UUID("f62cd8be-f8b5-5995-903e-5487bfebea91")
DELETE_IN_AD_PHASE = "cleanup"  # the delete-in-AD instruction comes from the cleanup, not from a check


class FindingsPublisher:
    def __init__(self, endpoint: str, credential: AsyncTokenCredential, ca_file: str | None) -> None:
        self._endpoint, self._credential = endpoint, credential
        self._options: dict[str, Any] = {"connection_verify": ca_file} if ca_file else {}
        self._client: EventGridPublisherClient | None = None

    async def publish_delete_in_ad(self, vm: VmRef, finding: Finding) -> None:
        """Tell the on-premises team which computer object to delete (hybrid devices)."""
        data = {"resourceId": vm.resource_id, "message": finding.message, "device": finding.evidence}
        event = event_id(DELETE_IN_AD_EVENT_TYPE, vm, None, DELETE_IN_AD_PHASE, [finding])
        await self._send(vm.resource_id, DELETE_IN_AD_EVENT_TYPE, data, event)

    async def publish(
        self, vm: VmRef, vm_id: str | None, findings: list[Finding], *, phase: FindingSource | None = None
    ) -> None:
        """One check's findings (none is news too: the VM was checked). `phase` names the check;
        left out, it is the findings' own `phase` (an empty report then names none)."""
        data = {
            "resourceId": vm.resource_id,
            "vmId": vm_id,
            "findings": [
                {
                    "ruleId": finding.rule_id,
                    "severity": finding.severity,
                    "message": finding.message,
                    "evidence": finding.evidence,
                    "doc": finding.doc,
                    "phase": finding.phase,
                }
                for finding in findings
            ],
        }
        checked = phase if phase is not None else phase_of(findings)
        await self._send(vm.resource_id, EVENT_TYPE, data, event_id(EVENT_TYPE, vm, vm_id, checked, findings))

    async def _send(self, subject: str, event_type: str, data: dict[str, Any], identifier: str) -> None:
        from azure.eventgrid import EventGridEvent
        from azure.eventgrid.aio import EventGridPublisherClient

        if self._client is None:
            self._client = EventGridPublisherClient(self._endpoint, self._credential, **self._options)
        event = EventGridEvent(subject=subject, event_type=event_type, data_version="1.0", data=data, id=identifier)
        try:
            await self._client.send([event])
        except (ServiceRequestError, ServiceResponseError, HttpResponseError) as error:
            raise service_failure(error, EVENT_GRID) from error

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def event_id(event_type: str, vm: VmRef, vm_id: str | None, phase: str, findings: Iterable[Finding]) -> str:
    """The event's id: uuid5 in `EVENT_ID_NAMESPACE` over the event type, the VM's incarnation (its
    vmId; its resource id while the vmId is unknown), the check's phase and the fingerprint of the
    findings published. The same report gets the same id; another incarnation, phase or set of
    findings another one."""
    incarnation = f"vmId:{vm_id.lower()}" if vm_id else f"resourceId:{vm.resource_id.lower()}"
    name = json.dumps([event_type, incarnation, phase, findings_fingerprint(findings)])
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, name))


def findings_fingerprint(findings: Iterable[Finding]) -> str:
    """SHA-256 over every published field of every finding, in sorted order: the order findings are
    found in doesn't change it, a finding more, less or reworded does (a repeated one counts)."""
    canonical = sorted(
        json.dumps(
            [finding.rule_id, str(finding.severity), finding.message, finding.evidence, finding.doc, finding.phase],
            separators=(",", ":"),
        )
        for finding in findings
    )
    return hashlib.sha256("\n".join(canonical).encode("ascii")).hexdigest()


def phase_of(findings: Iterable[Finding]) -> str:
    """The check the findings come from, by their own `phase` ("" for none)."""
    return ",".join(sorted({finding.phase for finding in findings}))
