"""The small protocols the core needs from the outside world."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

from responder.model import VmRecord, VmRef

T = TypeVar("T")


class Ledger(Protocol):
    """The VM ledger (SPEC §2). Writes are optimistic: a row changed by someone
    else since it was read raises LedgerConflict instead of being overwritten."""

    async def get(self, vm: VmRef) -> VmRecord | None: ...

    async def insert(self, record: VmRecord) -> VmRecord: ...

    async def replace(self, record: VmRecord) -> VmRecord: ...

    async def update(
        self, vm: VmRef, decide: Callable[[VmRecord], tuple[VmRecord, T]]
    ) -> tuple[VmRecord, T]: ...

    def records(self) -> AsyncIterator[VmRecord]: ...
