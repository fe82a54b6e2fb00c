"""A blast-radius cap smaller than one cleanup: the cleanup finishes over the hours the cap
allows, waiting on the queue in between, and never spins."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from handlers import vm_created, vm_deleted
from localdev.inprocess import run_queue
from responder.decisions.model import VmRef
from responder.stages.cleanup import process_cleanup
from responder.stages.queue_worker import MAX_ATTEMPTS
from tests.conftest import handle_as, load_event, sample_in_process

OLD = VmRef("6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d", "rg-avd-prod", "vm-old-09")
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


async def test_a_cap_of_one_deletion_per_hour_finishes_a_two_record_cleanup_in_two_hours() -> None:
    clock = {"now": NOW}
    env = {"RESPONDER_MODE": "enforce", "RESPONDER_CLEANUP_DELAY_SECONDS": "0", "RESPONDER_MAX_DELETIONS_PER_HOUR": "1"}
    product = sample_in_process(env, lambda: clock["now"])
    await handle_as(copy.deepcopy(load_event("eventgrid-vm-create-old-09.json")), vm_created.ACCEPTS, product.services)
    product.world.delete_vm(OLD.resource_id)
    await handle_as(copy.deepcopy(load_event("eventgrid-vm-delete.json")), vm_deleted.ACCEPTS, product.services)

    async def work(text: str, attempt: int) -> object:
        return await process_cleanup(text, attempt, product.services)

    deliveries = await run_queue(product.queue, work, max_dequeue_count=MAX_ATTEMPTS)
    (waiting,) = product.queue.messages
    first_hour = [r for r in product.graph.served() if r.method == "DELETE"]
    clock["now"] += timedelta(hours=1, seconds=1)
    deliveries += await run_queue(product.queue, work, max_dequeue_count=MAX_ATTEMPTS)

    assert len(first_hour) == 1
    assert waiting.visible_at - NOW.timestamp() >= 3000  # waits for the hour to free a slot, doesn't spin
    assert deliveries == 2
    (cleanup,) = product.audit.cleanups.values()
    assert cleanup.finished
    assert all(target.deleted_at is not None for target in cleanup.targets)
    await product.services.aclose()
