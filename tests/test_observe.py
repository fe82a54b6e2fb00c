"""What an event teaches the ledger: duplicates change nothing, late events never
move the power state back, a write after a deletion is a new VM, which inherits the
deleted one's device only when it boots the same OS disk (design §1, §2, §4)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from responder.decisions.events import ClassifiedEvent, Schema, VmEvent
from responder.decisions.facts import VmFacts
from responder.decisions.model import (
    DeviceMapping,
    EventKind,
    Incarnation,
    PowerState,
    SuppressionState,
    VmRecord,
    VmRef,
)
from responder.decisions.observe import RECENT_EVENT_IDS_KEPT, Outcome, adopt_incarnation, observe, settle

VM = VmRef("6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d", "rg", "vm1")
T0 = datetime(2026, 11, 20, 19, 0, tzinfo=UTC)


def event(kind: EventKind, minutes: int = 0, event_id: str | None = None) -> VmEvent:
    return VmEvent(
        kind=kind,
        event_id=event_id or f"{kind.value}-{minutes}",
        event_time=T0 + timedelta(minutes=minutes),
        operation_name="op",
        vm=VM,
    )


def after(*events: VmEvent) -> VmRecord:
    """The row after each event was observed and its work done (the pipeline settles it then)."""
    record = VmRecord(ref=VM)
    for item in events:
        record = settle(observe(record, item).record, item.event_id)
    return record


@pytest.mark.parametrize(
    ("kind", "state"),
    [
        (EventKind.DEALLOCATED, PowerState.DEALLOCATED),
        (EventKind.POWERED_OFF, PowerState.STOPPED),
        (EventKind.STARTED, PowerState.RUNNING),
        (EventKind.DELETED, PowerState.DELETED),
    ],
)
def test_a_power_event_sets_the_power_state(kind: EventKind, state: PowerState) -> None:
    observation = observe(VmRecord(ref=VM), event(kind))

    assert observation.outcome is Outcome.RECORDED
    assert observation.record.power_state is state
    assert observation.record.power_state_at == T0


def test_a_repeated_event_id_changes_nothing() -> None:
    record = after(event(EventKind.DEALLOCATED))

    observation = observe(record, event(EventKind.DEALLOCATED))

    assert observation.outcome is Outcome.DUPLICATE
    assert observation.record == record


def test_an_event_whose_work_never_finished_is_resumed_on_redelivery() -> None:
    seen = observe(VmRecord(ref=VM), event(EventKind.DEALLOCATED)).record  # the stage then failed

    observation = observe(seen, event(EventKind.DEALLOCATED))

    assert observation.outcome is Outcome.RESUMED
    assert observation.record.power_state is PowerState.DEALLOCATED
    assert observation.record.pending_event_ids == ("deallocated-0",)


def test_a_redelivery_after_the_work_is_done_is_a_duplicate() -> None:
    done = settle(observe(VmRecord(ref=VM), event(EventKind.DEALLOCATED)).record, "deallocated-0")

    assert observe(done, event(EventKind.DEALLOCATED)).outcome is Outcome.DUPLICATE
    assert done.pending_event_ids == ()


def test_a_resumed_event_overtaken_by_a_later_one_is_stale() -> None:
    seen = observe(VmRecord(ref=VM), event(EventKind.DEALLOCATED, minutes=0)).record
    started = settle(observe(seen, event(EventKind.STARTED, minutes=5)).record, "started-5")

    observation = observe(started, event(EventKind.DEALLOCATED, minutes=0))

    assert observation.outcome is Outcome.STALE
    assert "deallocated-0" in observation.record.recent_event_ids


def test_a_deletion_older_than_the_vm_on_record_ended_an_earlier_vm_and_still_needs_its_cleanup() -> None:
    recreated = replace(
        after(event(EventKind.STARTED, minutes=10)),
        incarnation=replace(
            after(event(EventKind.STARTED, minutes=10)).incarnation, created_at=T0 + timedelta(minutes=8)
        ),
    )

    observation = observe(recreated, event(EventKind.DELETED, minutes=3))

    assert observation.outcome is Outcome.RECORDED
    assert observation.record.power_state is PowerState.RUNNING
    assert observation.record.deleted_at is None


def test_a_late_deallocate_does_not_override_a_later_start() -> None:
    record = after(event(EventKind.STARTED, minutes=10))

    observation = observe(record, event(EventKind.DEALLOCATED, minutes=0))

    assert observation.outcome is Outcome.STALE
    assert observation.record.power_state is PowerState.RUNNING
    assert observation.record.last_event_at[EventKind.DEALLOCATED] == T0


def test_a_stale_event_is_still_remembered_as_seen() -> None:
    record = after(event(EventKind.STARTED, minutes=10), event(EventKind.DEALLOCATED, minutes=0))

    assert observe(record, event(EventKind.DEALLOCATED, minutes=0)).outcome is Outcome.DUPLICATE


def test_the_deletion_time_is_recorded() -> None:
    record = after(event(EventKind.DELETED, minutes=5))

    assert record.deleted_at == T0 + timedelta(minutes=5)


def test_a_write_after_the_deletion_is_a_new_vm_with_the_same_name() -> None:
    record = after(event(EventKind.DELETED, minutes=5), event(EventKind.CREATED, minutes=6))

    assert record.deleted_at is None
    assert record.power_state is PowerState.UNKNOWN


def deleted_vm(**machine: Any) -> VmRecord:
    """The row of vm-life-1 (host-1, OS disk disk-1, device md-1 proven for it) after its deletion;
    `machine`: what is known of its incarnation otherwise."""
    known = VmRecord(
        ref=VM,
        suppression=SuppressionState.SUPPRESSED,
        incarnation=Incarnation(
            **{
                "vm_id": "vm-life-1",
                "computer_name": "host-1",
                "created_at": T0,
                "machine_since": T0,
                "os_disk_id": "disk-1",
                **machine,
            }
        ),
        device=DeviceMapping(managed_device_id="md-1", learnt_for_vm_id="vm-life-1"),
    )
    return settle(observe(known, event(EventKind.DELETED, minutes=5)).record, "deleted-5")


def written_again(record: VmRecord, **facts: Any) -> VmRecord:
    """A write after the deletion, then ARM's facts of the VM it names."""
    written = observe(record, event(EventKind.CREATED, minutes=60)).record
    return adopt_incarnation(written, replace(ARM_FACTS, **facts))


ARM_FACTS = VmFacts(
    ref=VM,
    vm_id="vm-life-2",
    computer_name="host-1",
    os_type="Windows",
    power_state=PowerState.RUNNING,
    os_disk_id="disk-2",
    time_created=T0 + timedelta(minutes=55),
)


def test_a_write_after_the_deletion_forgets_the_deleted_vm() -> None:
    record = observe(deleted_vm(), event(EventKind.CREATED, minutes=60)).record

    assert (record.incarnation.vm_id, record.incarnation.computer_name, record.incarnation.created_at) == (
        None,
        None,
        None,
    )


def test_a_vm_created_on_a_new_os_disk_inherits_nothing_of_the_deleted_one() -> None:
    record = written_again(deleted_vm(), os_disk_id="disk-2")

    assert (record.incarnation.vm_id, record.incarnation.os_disk_id, record.incarnation.machine_since) == (
        "vm-life-2",
        "disk-2",
        None,
    )  # not read
    assert (record.device.managed_device_id, record.device.learnt_for_vm_id) == (None, None)
    assert record.suppression is SuppressionState.NONE


def test_a_vm_booting_the_deleted_ones_os_disk_inherits_its_device_and_mark() -> None:
    record = written_again(deleted_vm(), os_disk_id="disk-1", os_disk_create_option="Attach")

    assert (record.device.managed_device_id, record.device.learnt_for_vm_id) == ("md-1", "vm-life-2")
    assert record.incarnation.machine_since == T0  # the installation is as old as the first VM that booted it
    assert record.incarnation.created_at == ARM_FACTS.time_created
    assert record.suppression is SuppressionState.SUPPRESSED


def test_a_vm_that_swapped_its_os_disk_keeps_no_device_of_the_old_one() -> None:
    known = replace(
        VmRecord(ref=VM),
        incarnation=Incarnation(vm_id="vm-life-2", os_disk_id="disk-2"),
        device=DeviceMapping(managed_device_id="md-2", learnt_for_vm_id="vm-life-2"),
    )

    record = adopt_incarnation(known, replace(ARM_FACTS, os_disk_id="disk-3"))

    assert (record.incarnation.os_disk_id, record.device.managed_device_id, record.device.learnt_for_vm_id) == (
        "disk-3",
        None,
        None,
    )


def test_the_os_disks_creation_dates_the_installation_a_vm_boots() -> None:
    attached_old_disk = T0 - timedelta(days=90)

    record = adopt_incarnation(VmRecord(ref=VM), replace(ARM_FACTS, os_disk_id="disk-9"), disk_since=attached_old_disk)

    assert record.incarnation.machine_since == attached_old_disk


def test_a_swapped_in_os_disk_seen_without_its_creation_time_is_dated_when_the_swap_was_seen() -> None:
    known = replace(
        VmRecord(ref=VM),
        incarnation=Incarnation(vm_id="vm-life-2", os_disk_id="disk-2", machine_since=T0),
    )
    seen = T0 + timedelta(days=3)

    record = adopt_incarnation(known, replace(ARM_FACTS, os_disk_id="disk-3"), noticed_at=seen)

    assert record.incarnation.machine_since == seen


def test_a_vm_of_an_unknown_os_disk_inherits_nothing() -> None:
    record = written_again(deleted_vm(os_disk_id=None), os_disk_id=None)

    assert (record.device.managed_device_id, record.device.learnt_for_vm_id) == (None, None)


def test_a_second_deletion_ended_a_vm_the_ledger_never_saw_and_knows_nothing_of() -> None:
    observation = observe(deleted_vm(), event(EventKind.DELETED, minutes=60))  # its creation event is late

    assert observation.outcome is Outcome.RECORDED
    assert (observation.record.incarnation.vm_id, observation.record.incarnation.computer_name) == (None, None)
    assert observation.record.device.learnt_for_vm_id == "vm-life-1"  # the earlier VM's device: evidence for it alone
    assert observation.record.deleted_at == T0 + timedelta(minutes=60)


def test_a_second_delete_event_of_the_same_deletion_is_that_deletion() -> None:
    observation = observe(deleted_vm(), event(EventKind.DELETED, minutes=5 + 1, event_id="delete-twin"))

    assert observation.outcome is Outcome.RECORDED  # its cleanup is queued again, and finds the first one's
    assert (observation.record.incarnation.vm_id, observation.record.deleted_at) == (
        "vm-life-1",
        T0 + timedelta(minutes=5),
    )


def test_a_late_write_of_a_deleted_vm_is_stale() -> None:
    record = after(event(EventKind.DELETED, minutes=5))

    observation = observe(record, event(EventKind.CREATED, minutes=1))

    assert observation.outcome is Outcome.STALE
    assert observation.record.deleted_at == T0 + timedelta(minutes=5)


def test_a_write_does_not_touch_the_power_state() -> None:
    record = after(event(EventKind.DEALLOCATED, minutes=0), event(EventKind.CREATED, minutes=3))

    assert record.power_state is PowerState.DEALLOCATED


def test_the_latest_time_per_kind_is_kept() -> None:
    record = after(event(EventKind.STARTED, minutes=9), event(EventKind.STARTED, minutes=2))

    assert record.last_event_at[EventKind.STARTED] == T0 + timedelta(minutes=9)


def test_the_remembered_event_ids_are_bounded() -> None:
    record = after(*(event(EventKind.STARTED, minutes=m) for m in range(RECENT_EVENT_IDS_KEPT + 5)))

    assert len(record.recent_event_ids) == RECENT_EVENT_IDS_KEPT
    assert record.recent_event_ids[-1] == f"started-{RECENT_EVENT_IDS_KEPT + 4}"


def test_an_ignored_event_never_reaches_the_ledger() -> None:
    ignored = ClassifiedEvent(
        EventKind.IGNORED, "e1", T0, "Microsoft.Resources.ResourceActionSuccess", "op", Schema.EVENT_GRID, vm=VM
    )

    assert ignored.vm_event is None
