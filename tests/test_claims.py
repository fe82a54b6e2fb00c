"""Two cleanups never chase one record (design §7): each record a cleanup deletes is claimed in the
audit table first, through the real table client against Azurite, and in the in-memory store the
stateful model uses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from azure.data.tables.aio import TableClient

from localdev.azurite import Azurite
from localdev.inprocess import MemoryAudit
from responder.adapters.audit_table import AuditTable
from responder.decisions.cleanup import CleanupRecord, Decision, Target
from responder.ports import Audit

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["azure-table", "in-memory"])
async def audit(request: pytest.FixtureRequest, azurite: Azurite, table_name: str) -> AsyncIterator[Audit]:
    if request.param == "in-memory":
        yield MemoryAudit(lambda: NOW)
        return
    table = AuditTable(TableClient.from_connection_string(azurite.connection_string, f"claims{table_name[-12:]}"))
    await table.ensure_table()
    yield table
    await table.close()


def cleanup(key: str) -> CleanupRecord:
    return CleanupRecord(
        key,
        f"event-{key}",
        "/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm",
        "enforce",
        Decision.DELETE,
        "proven",
        NOW,
        targets=(Target("managed", "md-1", "host-1"),),
    )


async def test_a_record_another_unfinished_cleanup_claimed_is_held_by_it(audit: Audit) -> None:
    await audit.save_cleanup(cleanup("first"))
    assert await audit.claim_records("first", ("md-1",)) is None

    assert await audit.claim_records("second", ("md-1", "obj-1")) == "first"


async def test_the_same_cleanup_claims_its_records_again_on_a_redelivery(audit: Audit) -> None:
    await audit.save_cleanup(cleanup("first"))
    assert await audit.claim_records("first", ("md-1",)) is None

    assert await audit.claim_records("first", ("md-1",)) is None


async def test_a_finished_cleanups_claim_passes_on(audit: Audit) -> None:
    saved = await audit.save_cleanup(cleanup("first"))
    assert await audit.claim_records("first", ("md-1",)) is None
    await audit.save_cleanup(saved.finish(NOW))

    assert await audit.claim_records("second", ("md-1",)) is None
    assert await audit.claim_records("third", ("md-1",)) == "second"


async def test_a_fresh_claim_whose_cleanup_row_is_not_written_yet_still_holds(audit: Audit) -> None:
    assert await audit.claim_records("first", ("md-1",)) is None  # its row is written next

    assert await audit.claim_records("second", ("md-1",)) == "first"
