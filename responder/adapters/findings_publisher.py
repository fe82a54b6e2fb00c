"""Publish prerequisite findings as custom events on an Event Grid topic (azure-eventgrid).

Other automation (ITSM tickets, Teams notices) subscribes to the topic. The app's
managed identity needs the "EventGrid Data Sender" role on the topic; no keys.
azure-eventgrid is imported on the first publication: most events publish nothing,
and their cold start should not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from responder.adapters._errors import EVENT_GRID, service_failure
from responder.model import Finding, VmRef

if TYPE_CHECKING:
    from azure.eventgrid.aio import EventGridPublisherClient

EVENT_TYPE = "IntuneVmResponder.PrerequisiteFindings"
DELETE_IN_AD_EVENT_TYPE = "IntuneVmResponder.DeleteInActiveDirectory"


class FindingsPublisher:
    def __init__(self, endpoint: str, credential: AsyncTokenCredential, ca_file: str | None) -> None:
        self._endpoint, self._credential = endpoint, credential
        self._options: dict[str, Any] = {"connection_verify": ca_file} if ca_file else {}
        self._client: EventGridPublisherClient | None = None

    async def publish_delete_in_ad(self, vm: VmRef, finding: Finding) -> None:
        """Tell the on-premises team which computer object to delete (hybrid devices)."""
        data = {"resourceId": vm.resource_id, "message": finding.message, "device": finding.evidence}
        await self._send(vm.resource_id, DELETE_IN_AD_EVENT_TYPE, data)

    async def publish(self, vm: VmRef, vm_id: str | None, findings: list[Finding]) -> None:
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
        await self._send(vm.resource_id, EVENT_TYPE, data)

    async def _send(self, subject: str, event_type: str, data: dict[str, Any]) -> None:
        from azure.eventgrid import EventGridEvent
        from azure.eventgrid.aio import EventGridPublisherClient

        if self._client is None:
            self._client = EventGridPublisherClient(self._endpoint, self._credential, **self._options)
        event = EventGridEvent(subject=subject, event_type=event_type, data_version="1.0", data=data)
        try:
            await self._client.send([event])
        except (ServiceRequestError, ServiceResponseError, HttpResponseError) as error:
            raise service_failure(error, EVENT_GRID) from error

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
