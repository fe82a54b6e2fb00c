"""An event counts as handled only when its work is done: after each fault, Event Grid's
redelivery of the same event finishes the job, and the job's effect happens once.

Graph and ARM faults go through the real handler functions, the SDK clients over HTTPS and
Azurite; storage faults (down, or the answer lost after the write) through the same pipeline
over the in-process stores, where a fault can be aimed at one step.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers import cleanup_worker, vm_created, vm_deleted, vm_power
from handlers._eventgrid import trigger_input
from localdev.inprocess import InProcess, run_queue
from localdev.simulators import Simulators
from responder.composition import close_services, get_services
from responder.decisions.errors import TransientError
from responder.decisions.model import EventKind, SuppressionState, VmRef
from responder.ports import Services
from responder.stages.cleanup import process_cleanup
from responder.stages.queue_worker import MAX_ATTEMPTS
from tests.conftest import deployed_services, handle_as, load_event, log_lines, outcome_of, sample_in_process

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
WIN11 = VmRef(SUB, "rg-avd-prod", "vm-win11-01")
WIN11_ENTRA = "e0b10001-1111-4222-8333-000000000001"
OLD = VmRef(SUB, "rg-avd-prod", "vm-old-09")
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

on_vm_power_changed = vm_power.on_vm_power_changed.build().get_user_function()
on_vm_created = vm_created.on_vm_created.build().get_user_function()
on_vm_deleted = vm_deleted.on_vm_deleted.build().get_user_function()
on_cleanup_message = cleanup_worker.on_cleanup_message.build().get_user_function()


# --- Graph and ARM faults, through the real functions ------------------------------------


@pytest.fixture
async def enforcing(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Services]:
    monkeypatch.setenv("RESPONDER_MODE", "enforce")
    monkeypatch.setenv("RESPONDER_SUPPRESSION_GROUP_ID", GROUP)
    yield await deployed_services()
    await close_services()


async def test_graph_failing_past_the_retries_leaves_the_deallocation_to_its_redelivery(
    enforcing: Services, simulators: Simulators
) -> None:
    simulators.world.set_power_state(WIN11.resource_id, "deallocated")
    raw = load_event("eventgrid-vm-deallocate.json")
    simulators.graph.faults.fail, simulators.graph.faults.methods = [500], frozenset({"POST"})

    with pytest.raises(TransientError):
        await on_vm_power_changed(trigger_input(raw))
    redelivered = await outcome_of(on_vm_power_changed, raw)

    assert redelivered.outcome == "resumed"
    assert simulators.tenant.members_of(GROUP) == [WIN11_ENTRA]
    record = await enforcing.ledger.get(WIN11)
    assert record is not None
    assert record.suppression is SuppressionState.SUPPRESSED


async def test_an_arm_refusal_of_a_power_event_is_logged_once_and_not_retried(
    enforcing: Services, simulators: Simulators, caplog: pytest.LogCaptureFixture
) -> None:
    simulators.arm.faults.fail = [403]

    handled = await outcome_of(on_vm_power_changed, load_event("eventgrid-vm-deallocate.json"))

    assert handled.outcome == "failed"
    assert "403" in handled.reason
    (line,) = log_lines(caplog, "event")
    assert (line["_level"], line["failure"], line["service"]) == (
        logging.ERROR,
        "access-denied",
        "Azure Resource Manager",
    )
    assert simulators.tenant.members_of(GROUP) == []


async def test_an_arm_refusal_of_a_write_event_is_logged_once_and_not_retried(
    enforcing: Services, simulators: Simulators
) -> None:
    simulators.arm.faults.fail = [403]

    handled = await outcome_of(on_vm_created, load_event("eventgrid-vm-write.json"))

    assert handled.outcome == "failed"
    assert "403" in handled.reason


# --- storage faults, aimed at one step ---------------------------------------------------


@pytest.fixture
def product() -> InProcess:
    env = {"RESPONDER_MODE": "enforce", "RESPONDER_SUPPRESSION_GROUP_ID": GROUP, "RESPONDER_CLEANUP_DELAY_SECONDS": "0"}
    clock = {"now": NOW}
    running = sample_in_process(env, lambda: clock["now"])
    running.clock = clock  # type: ignore[attr-defined]
    return running


async def deliver(product: InProcess, raw: dict[str, Any], accepts: frozenset[EventKind]) -> str:
    return (await handle_as(copy.deepcopy(raw), accepts, product.services)).outcome


async def deallocated(product: InProcess) -> dict[str, Any]:
    product.world.set_power_state(WIN11.resource_id, "deallocated")
    return load_event("eventgrid-vm-deallocate.json")


# The ledger writes of a power event: the event seen, the lease, the outcome, the event settled.
SEEN, LEASE, COMMIT, SETTLE = range(4)


async def test_storage_down_at_the_commit_leaves_the_event_to_its_redelivery(product: InProcess) -> None:
    raw = await deallocated(product)
    product.ledger.faults.skip, product.ledger.faults.fail = COMMIT, 1

    with pytest.raises(TransientError):
        await deliver(product, raw, vm_power.ACCEPTS)
    outcome = await deliver(product, raw, vm_power.ACCEPTS)

    assert outcome == "resumed"
    assert product.tenant.members_of(GROUP) == [WIN11_ENTRA]
    record = await product.ledger.get(WIN11)
    assert record is not None
    assert (record.suppression, record.lease_owner) == (SuppressionState.SUPPRESSED, None)


async def test_an_answer_lost_after_the_settle_makes_the_redelivery_a_duplicate(product: InProcess) -> None:
    raw = await deallocated(product)
    product.ledger.faults.skip, product.ledger.faults.lose = SETTLE, 1

    with pytest.raises(TransientError):
        await deliver(product, raw, vm_power.ACCEPTS)
    outcome = await deliver(product, raw, vm_power.ACCEPTS)

    assert outcome == "duplicate"
    assert product.tenant.members_of(GROUP) == [WIN11_ENTRA]


async def test_a_lease_held_by_another_event_is_waited_out_by_the_redelivery(product: InProcess) -> None:
    raw = await deallocated(product)
    await product.ledger.update(
        WIN11, lambda row: (replace(row, lease_owner="another-event", lease_until=NOW + timedelta(minutes=5)), None)
    )

    with pytest.raises(TransientError, match="being handled"):
        await deliver(product, raw, vm_power.ACCEPTS)
    product.clock["now"] = NOW + timedelta(minutes=6)  # type: ignore[attr-defined]
    outcome = await deliver(product, raw, vm_power.ACCEPTS)

    assert outcome == "resumed"
    assert product.tenant.members_of(GROUP) == [WIN11_ENTRA]


async def seen_and_deleted(product: InProcess) -> dict[str, Any]:
    """vm-old-09's write event while it existed (the ledger learns it), then its deletion."""
    assert await deliver(product, load_event("eventgrid-vm-create-old-09.json"), vm_created.ACCEPTS) == "recorded"
    product.world.delete_vm(OLD.resource_id)
    return load_event("eventgrid-vm-delete.json")


async def work_queue(product: InProcess) -> None:
    async def work(text: str, attempt: int) -> object:
        return await process_cleanup(text, attempt, product.services)

    await run_queue(product.queue, work, max_dequeue_count=MAX_ATTEMPTS)


async def test_a_deletion_whose_message_was_not_queued_is_queued_by_the_redelivery(product: InProcess) -> None:
    raw = await seen_and_deleted(product)
    product.queue.faults.fail = 1

    with pytest.raises(TransientError):
        await deliver(product, raw, vm_deleted.ACCEPTS)
    outcome = await deliver(product, raw, vm_deleted.ACCEPTS)
    await work_queue(product)

    assert outcome == "resumed"
    (cleanup,) = product.audit.cleanups.values()
    assert [target.deleted_at is not None for target in cleanup.targets] == [True, True]


async def test_a_message_queued_twice_after_a_lost_answer_cleans_up_once(product: InProcess) -> None:
    raw = await seen_and_deleted(product)
    product.queue.faults.lose = 1

    with pytest.raises(TransientError):
        await deliver(product, raw, vm_deleted.ACCEPTS)
    await deliver(product, raw, vm_deleted.ACCEPTS)
    await work_queue(product)

    assert len(product.queue.messages) == 0
    (cleanup,) = product.audit.cleanups.values()  # both messages, one cleanup
    deletes = [r for r in product.graph.served() if r.method == "DELETE"]
    assert len(deletes) == 2  # the Intune record and the Entra object, once each
    assert cleanup.finished


async def test_graph_refusing_the_deletion_parks_the_cleanup_at_once_naming_the_roles(
    enforcing: Services, simulators: Simulators, azurite: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localdev.queue_host import queue_client, run_queue_trigger

    await close_services()
    monkeypatch.setenv("RESPONDER_CLEANUP_DELAY_SECONDS", "0")
    services = await get_services()
    assert await outcome_of(on_vm_created, load_event("eventgrid-vm-create-old-09.json")) is not None
    simulators.world.delete_vm(OLD.resource_id)
    await outcome_of(on_vm_deleted, load_event("eventgrid-vm-delete.json"))
    simulators.graph.faults.fail, simulators.graph.faults.methods = [403], frozenset({"DELETE"})

    run = await run_queue_trigger(azurite.connection_string, services.settings.cleanup.queue, on_cleanup_message)

    assert (run.completed, run.retried) == (1, 0)
    async with queue_client(azurite.connection_string, services.settings.cleanup.poison_queue) as poison:
        (parked,) = [message async for message in poison.receive_messages()]
    assert "Graph app roles" in parked.content
