"""The stateful model over the wire: the real handler functions, the real SDK clients over
HTTPS to the Graph and ARM simulators, the ledger, audit table and queues in Azurite.

Fewer sequences than the in-process model (`test_model.py`), the same world, oracle and
invariants: what this adds is everything between the decision and the wire (the SDKs'
serialisation and retries, ETags in Azure Tables, Base64 queue messages, the Functions
trigger objects, the host's dequeue count and poison queue). Faults are Graph's (storage
faults need the in-process fakes). The cleanup delay is 0 here: Azurite's visibility
timeouts run on the wall clock, the world's clock is the model's.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from azure.data.tables.aio import TableClient
from azure.functions.timer import TimerRequest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

from handlers import cleanup_worker, device_check, reconcile_timer, vm_created, vm_deleted, vm_power
from localdev.azurite import Azurite
from localdev.queue_host import queue_client, run_queue_trigger
from localdev.sim_http import SimulatedApi
from localdev.simulators import Simulators
from responder.adapters.audit_table import CLEANUP_PARTITION, cleanup_record_from_entity
from responder.composition import close_services
from responder.decisions.cleanup import CleanupRecord
from responder.decisions.model import EventKind, VmRecord, VmRef
from responder.ports import Services
from responder.stages.pipeline import Handled
from tests.conftest import deployed_services, outcome_of
from tests.model_world import GROUP, SUB_A, SUB_B
from tests.test_model import GRAPH_FAULTS, ResponderModel, inject_graph_fault

SEQUENCES = int(os.environ.get("RESPONDER_MODEL_HTTPS_SEQUENCES", "25"))
FUNCTIONS = {
    kind: blueprint_function.build().get_user_function()
    for blueprint_function, accepts in (
        (vm_created.on_vm_created, vm_created.ACCEPTS),
        (vm_power.on_vm_power_changed, vm_power.ACCEPTS),
        (vm_deleted.on_vm_deleted, vm_deleted.ACCEPTS),
    )
    for kind in accepts
}
on_cleanup_message = cleanup_worker.on_cleanup_message.build().get_user_function()
on_device_check_message = device_check.on_device_check_message.build().get_user_function()
on_reconcile_timer = reconcile_timer.on_reconcile_timer.build().get_user_function()


class WireModel(ResponderModel):
    """The same model, the product reached the way the Functions host reaches it."""

    azurite: Azurite
    simulators: Simulators

    def build_product(self) -> Services:
        names = uuid.uuid4().hex[:12]
        os.environ.update(
            {
                "RESPONDER_LEDGER_TABLE": f"ledger{names}",
                "RESPONDER_AUDIT_TABLE": f"audit{names}",
                "RESPONDER_CLEANUP_QUEUE": f"cleanup-{names}",
                "RESPONDER_DEVICE_CHECK_QUEUE": f"checks-{names}",
            }
        )
        # The simulators serve this sequence's world; their records and faults start empty.
        self.simulators.graph_router.tenant = self.world.tenant
        self.simulators.arm_router.world = self.world.arm
        for api in (self.simulators.graph, self.simulators.arm):
            api.faults.clear()
            api.reset_calls()
        services: Services = self._run(deployed_services())
        services.clock = lambda: self.world.now  # leases and cleanup records on the world's clock
        return services

    @property
    def graph(self) -> SimulatedApi:
        return self.simulators.graph

    @rule(where=st.sampled_from(GRAPH_FAULTS), count=st.integers(1, 3))
    def fault(self, where: str, count: int) -> None:
        inject_graph_fault(self.graph, where, count)

    def handle(self, raw: dict[str, Any], kind: EventKind) -> Handled:
        return self._run(outcome_of(FUNCTIONS[kind], raw))  # type: ignore[no-any-return]

    def run_worker(self) -> None:
        self._run(
            run_queue_trigger(self.azurite.connection_string, self.product.settings.cleanup.queue, on_cleanup_message)
        )

    def run_device_checks(self) -> None:
        """Over Azurite, whose visibility delays run on the wall clock: the checks whose delay is over."""
        queue = self.product.settings.device_check.queue
        self._run(run_queue_trigger(self.azurite.connection_string, queue, on_device_check_message))

    def run_reconcile(self) -> None:
        self._run(on_reconcile_timer(TimerRequest(past_due=False)))

    def ledger_row(self, vm: VmRef) -> VmRecord | None:
        return self._run(self.product.ledger.get(vm))  # type: ignore[no-any-return]

    def queued(self) -> int:
        async def count() -> int:
            async with queue_client(self.azurite.connection_string, self.product.settings.cleanup.queue) as queue:
                properties = await queue.get_queue_properties()
                return int(properties.approximate_message_count or 0)

        return self._run(count())  # type: ignore[no-any-return]

    def poison(self) -> list[dict[str, Any]]:
        """Parked by the worker: the envelope with its reason; moved by the host: the body only."""

        async def read() -> list[dict[str, Any]]:
            async with queue_client(
                self.azurite.connection_string, self.product.settings.cleanup.poison_queue
            ) as queue:
                return [_parked(message.content) for message in await queue.peek_messages(max_messages=32)]

        return self._run(read())  # type: ignore[no-any-return]

    def cleanups(self) -> list[CleanupRecord]:
        async def read() -> list[CleanupRecord]:
            table_name = self.product.settings.cleanup.audit_table
            async with TableClient.from_connection_string(self.azurite.connection_string, table_name) as table:
                rows = table.query_entities(f"PartitionKey eq '{CLEANUP_PARTITION}'")
                return [cleanup_record_from_entity(row, row.metadata.get("etag")) async for row in rows]

        return self._run(read())  # type: ignore[no-any-return]

    def clear_faults(self) -> None:
        self.graph.faults.clear()

    def faults_injected(self) -> int:
        return self.graph.faults.injected

    def close(self) -> None:
        self._run(close_services())


def _parked(content: str) -> dict[str, Any]:
    try:
        envelope = json.loads(content)
    except ValueError:
        return {"reason": None, "message": content}
    if isinstance(envelope, dict) and "reason" in envelope and "message" in envelope:
        return envelope
    return {"reason": None, "message": content}


@pytest.fixture
def wire_env(azurite: Azurite, simulators: Simulators, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app settings the model's in-process run uses, pointed at Azurite and the simulators."""
    for name, value in {
        "AzureWebJobsStorage": azurite.connection_string,
        "RESPONDER_MODE": "enforce",
        "RESPONDER_ALLOWED_SUBSCRIPTIONS": SUB_A,
        "RESPONDER_SUPPRESSION_GROUP_ID": GROUP,
        "RESPONDER_SUPPRESSION_ATTRIBUTE": "7",
        "RESPONDER_CLEANUP_DELAY_SECONDS": "0",
        "RESPONDER_MAX_DELETIONS_PER_HOUR": "100000",
        "RESPONDER_WATCHED_SUBSCRIPTIONS": f"{SUB_A},{SUB_B}",
        "RESPONDER_RECONCILE_STALE_DAYS": "1",
        "RESPONDER_FINDINGS_TOPIC_ENDPOINT": "",
        **{key: value for key, value in simulators.settings.items() if key != "RESPONDER_FINDINGS_TOPIC_ENDPOINT"},
        "RESPONDER_LEDGER_TABLE": "placeholder",
        "RESPONDER_AUDIT_TABLE": "placeholder",
        "RESPONDER_CLEANUP_QUEUE": "placeholder",
        "RESPONDER_DEVICE_CHECK_QUEUE": "placeholder",
        "RESPONDER_DEVICE_CHECK_FIRST_DELAY_SECONDS": "1",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.timeout(900)
def test_the_model_holds_through_the_real_functions_over_https(
    azurite: Azurite, simulators: Simulators, wire_env: None
) -> None:
    WireModel.azurite, WireModel.simulators = azurite, simulators
    run_state_machine_as_test(
        WireModel,
        settings=settings(
            max_examples=SEQUENCES,
            stateful_step_count=20,
            deadline=None,
            database=None,
            derandomize=os.environ.get("RESPONDER_MODEL_EXPLORE") != "1",  # as the in-process model
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
