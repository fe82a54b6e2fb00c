"""Read, decide, write with the ETag read; on a lost race, read again and decide again.

Shared by every ledger implementation (Azure Tables, and the in-process one the
model tests use), so both resolve concurrent events for one VM the same way.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TypeVar

from responder.decisions.errors import LedgerConflict
from responder.decisions.model import VmRecord, VmRef

T = TypeVar("T")

# Concurrent events for one VM are rare and short; after this many lost races
# the event goes back to Event Grid, which retries it later. Between attempts
# a random, growing pause spreads the contenders out (full jitter).
UPDATE_ATTEMPTS = 8
UPDATE_BACKOFF_SECONDS = 0.02


class OptimisticUpdates:
    """`update` on top of `get`, `insert` and `replace` (which raise LedgerConflict on a lost race)."""

    async def get(self, vm: VmRef) -> VmRecord | None:
        raise NotImplementedError

    async def insert(self, record: VmRecord) -> VmRecord:
        raise NotImplementedError

    async def replace(self, record: VmRecord) -> VmRecord:
        raise NotImplementedError

    async def update(
        self, vm: VmRef, decide: Callable[[VmRecord], tuple[VmRecord, T]], read: VmRecord | None = None
    ) -> tuple[VmRecord, T]:
        """`decide` must be pure: it may run more than once. Nothing is written when it changes nothing.

        `read`: the row as the caller read it a moment ago, tried first (its ETag says whether it still is).
        """
        for attempt in range(UPDATE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(random.uniform(0, UPDATE_BACKOFF_SECONDS * 2**attempt))  # noqa: S311
            current = read if attempt == 0 and read is not None else await self.get(vm)
            base = current if current is not None else VmRecord(ref=vm)
            wanted, result = decide(base)
            if current is not None and wanted == current:
                return current, result
            try:
                if current is None:
                    return await self.insert(wanted), result
                return await self.replace(wanted), result
            except LedgerConflict:
                continue
        raise LedgerConflict(f"gave up after {UPDATE_ATTEMPTS} concurrent updates of {vm.resource_id}")
