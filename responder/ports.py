"""The small protocols the stages need from the outside world, and `Services`, the set the composition
root builds of them: the stages see only this module, never an adapter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from responder.decisions.facts import (
    DeviceFinds,
    DeviceReads,
    EntraDevice,
    Gone,
    HostPool,
    ImageDefinition,
    ManagedDevice,
    OsDisk,
    VmFacts,
)
from responder.decisions.model import Finding, FindingSource, VmRecord, VmRef
from responder.decisions.settings import Settings

if TYPE_CHECKING:  # types only: a cold start loads them where they are used (cleanup worker, policy reads)
    from responder.decisions.audit import AuditEntry
    from responder.decisions.blast_radius import Reservation
    from responder.decisions.cleanup import CleanupRecord
    from responder.decisions.errors import RequestRefused
    from responder.decisions.intune_policies import Policy
    from responder.decisions.suppression import Action

T = TypeVar("T")


class Ledger(Protocol):
    """The VM ledger (design §2). Writes are optimistic: a row changed by someone
    else since it was read raises LedgerConflict instead of being overwritten."""

    async def get(self, vm: VmRef) -> VmRecord | None: ...

    async def insert(self, record: VmRecord) -> VmRecord: ...

    async def replace(self, record: VmRecord) -> VmRecord: ...

    async def update(
        self, vm: VmRef, decide: Callable[[VmRecord], tuple[VmRecord, T]], read: VmRecord | None = None
    ) -> tuple[VmRecord, T]: ...

    def records(self) -> AsyncIterator[VmRecord]: ...


class DeviceDirectory(Protocol):
    """Intune and Entra through Microsoft Graph (design §2, §4, §5).

    Deliberately no wipe, retire, reset, lock, Fresh Start, Autopilot reset or
    BitLocker key rotation: the responder cleans up records of machines that no
    longer exist and must never be able to act on a machine that does.
    Writes report whether they changed anything (False: already so), so every
    caller is idempotent. Throttling and outages raise TransientError.
    """

    async def close(self) -> None: ...

    async def read_devices(self, reads: DeviceReads) -> DeviceFinds:
        """Every lookup of one round at once (a `$batch`): the records that could be a VM's."""
        ...

    async def apply(self, actions: Sequence[Action]) -> list[bool | RequestRefused]:
        """A plan's writes at once (a `$batch`), each answered: True done, False already so, or Graph's
        refusal; TransientError when Graph kept throttling or failing."""
        ...

    async def get_managed_device(self, managed_device_id: str) -> ManagedDevice | None: ...

    def windows_virtual_machines(self) -> AsyncIterator[ManagedDevice]: ...

    async def find_entra_devices(self, device_id: str) -> list[EntraDevice]: ...

    # Batched ($batch: one call each), for the cleanup worker.
    async def delete_records(self, managed_device_id: str | None, entra_object_id: str | None) -> dict[str, bool]: ...

    async def records_exist(self, managed_device_id: str | None, entra_object_id: str | None) -> dict[str, bool]: ...

    # Read-only, for the device-side prerequisite check.
    async def device_group_ids(self, object_id: str) -> frozenset[str]:
        """The ids (lower case) of every group the Entra device is in, directly or through other groups."""
        ...

    async def intune_policies(self) -> list[Policy]:
        """Every device configuration profile and compliance policy, with its assignments."""
        ...


class Compute(Protocol):
    """The VM side, read from Azure Resource Manager."""

    async def get_vm(self, vm: VmRef) -> VmFacts | Gone: ...

    async def get_image_definition(self, image_id: str) -> ImageDefinition | Gone: ...

    async def get_disk(self, disk_id: str) -> OsDisk | Gone:
        """A managed disk and the VM it is attached to (a deleted VM's kept OS disk may boot another)."""
        ...

    async def find_host_pool(self, vm: VmFacts) -> HostPool | None:
        """The AVD host pool the VM is a session host of (what the VM says of itself helps find it)."""
        ...

    def list_vms(self, subscription_id: str) -> AsyncIterator[VmFacts]: ...

    async def merge_tags(self, vm: VmRef, tags: dict[str, str]) -> None: ...


class WorkQueue(Protocol):
    """A queue of work (cleanups, device checks) and its poison queue. Failures raise TransientError."""

    async def send(self, text: str, delay_seconds: int) -> None: ...

    async def send_poison(self, text: str, reason: str) -> None: ...

    async def poison_depth(self) -> int:
        """About how many messages wait in the poison queue (Azure's approximate count)."""
        ...


class FindingsTopic(Protocol):
    """The Event Grid topic other automation listens on: prerequisite findings, hybrid devices to delete in AD."""

    async def publish(
        self, vm: VmRef, vm_id: str | None, findings: list[Finding], *, phase: FindingSource | None = None
    ) -> None: ...

    async def publish_delete_in_ad(self, vm: VmRef, finding: Finding) -> None: ...


class DeadLetters(Protocol):
    """Event Grid's dead-letter container. Failures raise TransientError."""

    async def count(self) -> int: ...


class Audit(Protocol):
    """The audit table: decisions, each cleanup's progress, the blast-radius cap, the reconciliation cursor.

    `save_cleanup` inserts (no ETag) or replaces under the ETag it read; a concurrent
    change raises LedgerConflict. Failures raise TransientError.
    """

    async def record(self, entry: AuditEntry) -> None: ...

    async def cleanup_record(self, key: str) -> CleanupRecord | None: ...

    async def save_cleanup(self, record: CleanupRecord) -> CleanupRecord: ...

    async def claim_records(self, key: str, record_ids: tuple[str, ...]) -> str | None:
        """Claim the records a cleanup is about to delete; the key of another cleanup still holding
        one of them (the claim stays), else None. A finished cleanup's claim passes on."""
        ...

    async def reserve_deletions(self, wanted: int, cap: int) -> Reservation: ...

    async def reconcile_cursor(self) -> int: ...

    async def save_reconcile_cursor(self, offset: int) -> None: ...

    async def entries(self) -> list[dict[str, object]]:
        """The decision rows as stored (the local run's report and the tests read them)."""
        ...


# What each stage touches: `Services` has them all; a stage is typed with the ports it uses, so
# a reader (and mypy) sees, for instance, that a deletion only queues its cleanup.


class DeletionPorts(Protocol):
    """The deletion stage: it queues the cleanup, and nothing else."""

    settings: Settings
    cleanup_queue: WorkQueue


class QueueWatchPorts(Protocol):
    """The queue watch: it counts the poison queues and the dead letters."""

    settings: Settings
    cleanup_queue: WorkQueue
    device_check_queue: WorkQueue
    dead_letters: DeadLetters | None


class CheckPorts(Protocol):
    """What both prerequisite checks report through: the VM's host pool, the findings topic."""

    settings: Settings
    compute: Compute
    findings_publisher: FindingsTopic | None


class CreationPorts(CheckPorts, Protocol):
    """The create-time check: ARM and the ledger; it queues the device-side check. No Graph."""

    @property
    def clock(self) -> Callable[[], datetime]: ...  # read only: `Services` keeps a callable there

    ledger: Ledger
    device_check_queue: WorkQueue


class DeviceCheckPorts(CreationPorts, Protocol):
    """The device-side check: the create-time check's ports, and the device's records in Graph."""

    directory: DeviceDirectory


class PowerPorts(Protocol):
    """The power stage: the VM, its ledger row and its device records. No queue, no audit table."""

    @property
    def clock(self) -> Callable[[], datetime]: ...

    settings: Settings
    ledger: Ledger
    directory: DeviceDirectory
    compute: Compute


class CleanupPorts(PowerPorts, Protocol):
    """The cleanup worker: the power stage's ports, its queue, the audit table, the findings topic."""

    cleanup_queue: WorkQueue
    audit: Audit
    findings_publisher: FindingsTopic | None


@dataclass
class Services:
    """What the core works with, each behind its protocol (`responder.ports`)."""

    settings: Settings
    ledger: Ledger
    directory: DeviceDirectory
    compute: Compute
    cleanup_queue: WorkQueue
    device_check_queue: WorkQueue  # a new VM's device-side check, once its device enrolled
    audit: Audit
    findings_publisher: FindingsTopic | None = None
    dead_letters: DeadLetters | None = None  # None: not counted (no blob endpoint configured)
    # What time it is: leases, cleanup records and reconciliation read it here, so a test can move it.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # What closes the clients, last opened first (their connection pools, the credentials).
    closing: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack, repr=False)

    async def aclose(self) -> None:
        await self.closing.aclose()
