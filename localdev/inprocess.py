"""The responder's services in one process, for tests that run thousands of generated scenarios.

Graph is the product's real adapter (msgraph-sdk, its middleware and retries) over
`InProcessTransport` to the same `GraphSimulator` the HTTPS tests serve. ARM reads
the simulator's `ArmWorld` through the product's own document parser. Storage (the
ledger, the audit table, the cleanup queue) is kept in memory with the semantics the
product relies on from Azure: ETags, visibility delays, message expiry, dequeue counts,
poison. Each store takes injected faults: fail before applying, or apply and lose the answer.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

from azure.core.credentials import AccessToken

from localdev.arm_sim import ArmWorld
from localdev.graph_sim import GraphSimulator, GraphTenant
from localdev.sim_http import InProcessTransport, SimulatedApi, TokenBook
from responder.adapters._errors import ARM, status_failure
from responder.adapters.optimistic import OptimisticUpdates
from responder.adapters.storage_queue import NEVER_EXPIRES, message_timing
from responder.decisions import arm_documents
from responder.decisions.audit import AuditEntry
from responder.decisions.blast_radius import CapState, Reservation, reserve
from responder.decisions.cleanup import CleanupRecord
from responder.decisions.errors import LedgerConflict, TransientError
from responder.decisions.facts import Gone, HostPool, ImageDefinition, OsDisk, VmFacts
from responder.decisions.model import VmRecord, VmRef
from responder.decisions.settings import MAX_QUEUE_DELAY_SECONDS, Settings
from responder.ports import Services

GRAPH_BASE = "https://graph.simulated.invalid/v1.0"


@dataclass
class StorageFaults:
    """Faults for one store's writes: `fail` refuses the next N (storage down), `lose` applies
    the next N and raises as if the answer never came (a crash between the write and the next step)."""

    fail: int = 0
    lose: int = 0
    skip: int = 0  # writes that go through before the faults apply (to hit one step, e.g. a commit)
    injected: int = 0
    _skipping: bool = False

    def before(self, what: str) -> None:
        self._skipping = self.skip > 0
        if self._skipping:
            self.skip -= 1
            return
        if self.fail:
            self.fail -= 1
            self.injected += 1
            raise TransientError(f"storage unavailable (injected) while {what}")

    def after(self, what: str) -> None:
        if self._skipping:
            return
        if self.lose:
            self.lose -= 1
            self.injected += 1
            raise TransientError(f"storage answer lost (injected) after {what}")

    def clear(self) -> None:
        self.fail = self.lose = self.skip = 0


class MemoryLedger(OptimisticUpdates):
    """The ledger with Azure Tables' optimistic concurrency, in memory."""

    def __init__(self) -> None:
        self.rows: dict[str, VmRecord] = {}
        self.faults = StorageFaults()
        self._version = 0

    async def get(self, vm: VmRef) -> VmRecord | None:
        return self.rows.get(vm.resource_id)

    async def insert(self, record: VmRecord) -> VmRecord:
        self.faults.before("inserting a ledger row")
        if record.ref.resource_id in self.rows:
            raise LedgerConflict("row exists")
        return self._store(record)

    async def replace(self, record: VmRecord) -> VmRecord:
        self.faults.before("replacing a ledger row")
        current = self.rows.get(record.ref.resource_id)
        if current is None or current.etag != record.etag:
            raise LedgerConflict("row changed")
        return self._store(record)

    def _store(self, record: VmRecord) -> VmRecord:
        self._version += 1
        stored = replace(record, etag=str(self._version))
        self.rows[record.ref.resource_id] = stored
        self.faults.after("writing a ledger row")
        return stored

    async def records(self) -> AsyncIterator[VmRecord]:
        for record in list(self.rows.values()):
            yield record


class MemoryAudit:
    """The audit table's rows, the cleanup rows under their ETags, the cap and the cursor."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        self.rows: list[AuditEntry] = []
        self.cleanups: dict[str, CleanupRecord] = {}
        self.claims: dict[str, tuple[str, datetime]] = {}  # record id → the cleanup deleting it, since when
        self.cap = CapState()
        self.cursor = 0
        self.faults = StorageFaults()
        self._version = 0

    async def record(self, entry: AuditEntry) -> None:
        self.faults.before("writing an audit row")
        self.rows.append(entry)
        self.faults.after("writing an audit row")

    async def cleanup_record(self, key: str) -> CleanupRecord | None:
        return self.cleanups.get(key)

    async def save_cleanup(self, record: CleanupRecord) -> CleanupRecord:
        self.faults.before("writing a cleanup row")
        current = self.cleanups.get(record.key)
        if (current is None) != (record.etag is None) or (current is not None and current.etag != record.etag):
            raise LedgerConflict(f"cleanup {record.key} changed")
        self._version += 1
        stored = replace(record, etag=str(self._version))
        self.cleanups[record.key] = stored
        self.faults.after("writing a cleanup row")
        return stored

    async def claim_records(self, key: str, record_ids: tuple[str, ...]) -> str | None:
        self.faults.before("claiming records")
        for record_id in record_ids:
            holder, since = self.claims.get(record_id, (key, self.now()))
            record = self.cleanups.get(holder)
            unsaved = record is None and self.now() - since < timedelta(minutes=10)
            if holder != key and (unsaved or (record is not None and not record.finished)):
                return holder
            self.claims[record_id] = (key, self.now())
        self.faults.after("claiming records")
        return None

    async def reserve_deletions(self, wanted: int, cap: int) -> Reservation:
        self.cap, reservation = reserve(self.cap, wanted, cap, self.now())
        return reservation

    async def reconcile_cursor(self) -> int:
        return self.cursor

    async def save_reconcile_cursor(self, offset: int) -> None:
        self.cursor = offset

    async def entries(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = [
            {"Decision": entry.decision, "ResourceId": entry.resource_id or "", "Reason": entry.reason}
            for entry in self.rows
        ]
        rows.extend(
            {"Decision": record.decision.value, "ResourceId": record.resource_id, "Reason": record.reason}
            for record in self.cleanups.values()
        )
        return rows


DEFAULT_TIME_TO_LIVE_SECONDS = 7 * 24 * 3600  # Azure's, for a message put without messagettl


@dataclass
class QueuedMessage:
    text: str
    visible_at: float
    dequeue_count: int = 0
    expires_at: float | None = None  # None: never (messagettl=-1)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass
class MemoryQueue:
    """The cleanup queue and its poison queue, on a clock the test moves (seconds).

    Messages expire as Azure's do: at insertion plus the time-to-live (7 days when the
    sender gives none, never for -1), visible or not, and an expired message is gone, so
    one whose delay reaches its time-to-live is never delivered. `send` and `send_poison`
    put what the product's adapter puts (`message_timing`); `put_message` is Put Message
    itself, for any other sender. Poison entries carry their `expires_at` too."""

    clock: Callable[[], float]
    messages: list[QueuedMessage] = field(default_factory=list)
    poison: list[dict[str, Any]] = field(default_factory=list)
    faults: StorageFaults = field(default_factory=StorageFaults)

    async def send(self, text: str, delay_seconds: int) -> None:
        timing = message_timing(delay_seconds)
        self.faults.before("queueing a message")
        self.put_message(text, timing.visibility_timeout, timing.time_to_live)
        self.faults.after("queueing a message")

    async def send_poison(self, text: str, reason: str) -> None:
        self.faults.before("parking a message")
        self.put_poison(text, reason, message_timing(0).time_to_live)
        self.faults.after("parking a message")

    async def poison_depth(self) -> int:
        self.drop_expired()
        return len(self.poison)

    def put_message(self, text: str, visibility_timeout: int = 0, time_to_live: int | None = None) -> QueuedMessage:
        """Put Message: refused (400) outside Azure's bounds; expires at insertion plus the time-to-live."""
        _check_put(visibility_timeout, time_to_live)
        now = self.clock()
        message = QueuedMessage(text, now + visibility_timeout, expires_at=_expiry(now, time_to_live))
        self.messages.append(message)
        return message

    def put_poison(self, text: str, reason: str | None, time_to_live: int | None = None) -> None:
        """A message on the poison queue: the worker's envelope, or the host's copy (body only, no time-to-live)."""
        _check_put(0, time_to_live)
        self.poison.append({"reason": reason, "message": text, "expires_at": _expiry(self.clock(), time_to_live)})

    def drop_expired(self) -> None:
        """What Azure deletes on its own: every message past its expiry."""
        now = self.clock()
        self.messages[:] = [message for message in self.messages if not message.expired(now)]
        self.poison[:] = [item for item in self.poison if item["expires_at"] is None or item["expires_at"] > now]

    def visible(self) -> list[QueuedMessage]:
        self.drop_expired()
        return [message for message in self.messages if message.visible_at <= self.clock()]


def _check_put(visibility_timeout: int, time_to_live: int | None) -> None:
    """Put Message's bounds (Azure answers 400 outside them)."""
    if not 0 <= visibility_timeout <= MAX_QUEUE_DELAY_SECONDS:
        raise ValueError(f"visibilitytimeout {visibility_timeout} is outside 0-{MAX_QUEUE_DELAY_SECONDS} s")
    if time_to_live is not None and time_to_live != NEVER_EXPIRES:
        if time_to_live < 1:
            raise ValueError(f"messagettl {time_to_live} is neither at least 1 s nor -1")
        if visibility_timeout >= time_to_live:
            raise ValueError(f"visibilitytimeout {visibility_timeout} is not smaller than messagettl {time_to_live}")


def _expiry(now: float, time_to_live: int | None) -> float | None:
    if time_to_live == NEVER_EXPIRES:
        return None
    return now + (DEFAULT_TIME_TO_LIVE_SECONDS if time_to_live is None else time_to_live)


async def run_queue(
    queue: MemoryQueue,
    function: Callable[[str, int], Awaitable[object]],
    *,
    max_dequeue_count: int,
    retry_after_seconds: float = 0,
) -> int:
    """What the Functions host does with visible messages: deliver each, delete on success,
    make visible again on failure, move to the poison queue (body only) after the last delivery."""
    delivered = 0
    for message in sorted(queue.visible(), key=lambda item: item.visible_at):
        message.dequeue_count += 1
        delivered += 1
        try:
            await function(message.text, message.dequeue_count)
        except Exception:  # the host catches everything a function raises
            if message.dequeue_count >= max_dequeue_count:
                queue.messages.remove(message)
                queue.put_poison(message.text, None)  # as the host sends it: Azure's default time-to-live
            else:
                message.visible_at = queue.clock() + retry_after_seconds
            continue
        queue.messages.remove(message)
    return delivered


class WorldCompute:
    """ARM as the simulator's world says it is, read through the product's document parser."""

    def __init__(self, world: ArmWorld) -> None:
        self.world = world

    async def get_vm(self, vm: VmRef) -> VmFacts | Gone:
        document = self.world.vms.get(vm.resource_id)
        if document is None:
            return Gone(vm.resource_id)
        self.world.served.add(vm.resource_id)
        return arm_documents.vm_facts(copy.deepcopy(document))

    async def get_image_definition(self, image_id: str) -> ImageDefinition | Gone:
        if self.world.refused_scope(image_id) is not None:  # the simulator's 403, as the adapter maps it
            raise status_failure(HTTPStatus.FORBIDDEN, f"AuthorizationFailed over scope '{image_id}'", ARM)
        document = self.world.image_definition(image_id)
        return arm_documents.image_definition(document) if document else Gone(image_id)

    async def get_disk(self, disk_id: str) -> OsDisk | Gone:
        document = self.world.disks.get(disk_id.lower())
        return arm_documents.os_disk(copy.deepcopy(document)) if document else Gone(disk_id)

    async def find_host_pool(self, vm: VmFacts) -> HostPool | None:
        return None

    async def list_vms(self, subscription_id: str) -> AsyncIterator[VmFacts]:
        prefix = f"/subscriptions/{subscription_id}/"
        for key, document in list(self.world.vms.items()):
            if key.startswith(prefix):
                self.world.served.add(key)
                yield arm_documents.vm_facts(copy.deepcopy(document))

    async def merge_tags(self, vm: VmRef, tags: dict[str, str]) -> None:
        document = self.world.vms.get(vm.resource_id)
        if document is not None:
            document.setdefault("tags", {}).update(tags)


class LocalTokens:
    """An async token credential that hands out the simulators' tokens (no identity endpoint needed)."""

    def __init__(self, tokens: TokenBook) -> None:
        self._tokens = tokens

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        resource = scopes[0].removesuffix("/.default") if scopes else ""
        return AccessToken(self._tokens.issue(resource), 2**31 - 1)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> LocalTokens:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


@dataclass
class InProcess:
    """Everything one generated scenario runs against, and the services built on it."""

    services: Services
    graph: SimulatedApi
    tenant: GraphTenant
    world: ArmWorld
    ledger: MemoryLedger
    audit: MemoryAudit
    queue: MemoryQueue
    device_checks: MemoryQueue


def in_process(settings: Settings, tenant: GraphTenant, world: ArmWorld, now: Callable[[], datetime]) -> InProcess:
    """The product's services over in-process simulators and in-memory storage."""
    from responder.adapters.graph import build_graph_directory

    tokens = TokenBook()
    graph = SimulatedApi("graph", GraphSimulator(tenant, cloud=settings.cloud), tokens, audience=settings.cloud.graph)
    directory = build_graph_directory(LocalTokens(tokens), GRAPH_BASE, None, transport=InProcessTransport(graph))
    ledger, audit, queue = MemoryLedger(), MemoryAudit(now), MemoryQueue(lambda: now().timestamp())
    device_checks = MemoryQueue(lambda: now().timestamp())
    services = Services(
        settings=settings,
        ledger=ledger,
        directory=directory,
        compute=WorldCompute(world),
        cleanup_queue=queue,
        device_check_queue=device_checks,
        audit=audit,
        clock=now,
    )
    services.closing.push_async_callback(directory.close)
    return InProcess(services, graph, tenant, world, ledger, audit, queue, device_checks)
