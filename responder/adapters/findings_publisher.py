"""Publish prerequisite findings as custom events on an Event Grid topic (azure-eventgrid).

Other automation (ITSM tickets, Teams notices) subscribes to the topic. The app's
managed identity needs the "EventGrid Data Sender" role on the topic; no keys.
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.eventgrid import EventGridEvent
from azure.eventgrid.aio import EventGridPublisherClient

from responder.adapters._errors import EVENT_GRID, service_failure
from responder.model import Finding, VmRef

EVENT_TYPE = "IntuneVmResponder.PrerequisiteFindings"
DELETE_IN_AD_EVENT_TYPE = "IntuneVmResponder.DeleteInActiveDirectory"


class FindingsPublisher:
    def __init__(self, endpoint: str, credential: AsyncTokenCredential, ca_file: str | None) -> None:
        options: dict[str, Any] = {"connection_verify": ca_file} if ca_file else {}
        self._client = EventGridPublisherClient(endpoint, credential, **options)

    async def publish_delete_in_ad(self, vm: VmRef, finding: Finding) -> None:
        """Tell the on-premises team which computer object to delete (hybrid devices)."""
        await self._send(
            EventGridEvent(
                subject=vm.resource_id,
                event_type=DELETE_IN_AD_EVENT_TYPE,
                data_version="1.0",
                data={"resourceId": vm.resource_id, "message": finding.message, "device": finding.evidence},
            )
        )

    async def publish(self, vm: VmRef, vm_id: str | None, findings: list[Finding]) -> None:
        event = EventGridEvent(
            subject=vm.resource_id,
            event_type=EVENT_TYPE,
            data_version="1.0",
            data={
                "resourceId": vm.resource_id,
                "vmId": vm_id,
                "findings": [
                    {
                        "ruleId": finding.rule_id,
                        "severity": finding.severity,
                        "message": finding.message,
                        "evidence": finding.evidence,
                        "doc": finding.doc,
                    }
                    for finding in findings
                ],
            },
        )
        await self._send(event)

    async def _send(self, event: EventGridEvent) -> None:
        try:
            await self._client.send([event])
        except (ServiceRequestError, ServiceResponseError, HttpResponseError) as error:
            raise service_failure(error, EVENT_GRID) from error

    async def close(self) -> None:
        await self._client.close()
