"""The ownership decision (pure): which record is the VM's own, judged as a person would check it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from responder.decisions.facts import EntraDevice, ManagedDevice
from responder.decisions.model import DeviceMapping, Incarnation, VmRef
from responder.decisions.ownership import Subject, Verdict, decide_ownership

SUB, OTHER_SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d", "11111111-2222-3333-4444-555555555555"
VM = VmRef(SUB, "rg-avd", "vm-01")
CREATED = datetime(2026, 11, 1, tzinfo=UTC)
STOPPED = datetime(2026, 11, 20, tzinfo=UTC)


def subject(vm: VmRef, **known: Any) -> Subject:
    """The VM `vm`, with what is known of its incarnation."""
    return Subject(vm, Incarnation(**known))


HERE = subject(VM, vm_id="vmid-now", computer_name="avd-01", created_at=CREATED)
AD_HERE = subject(VM, vm_id="vmid-now", computer_name="avd-01", created_at=CREATED, join_kind="domain")


def arm_anchor(vm: VmRef, *, resource_group: str = "RG-AVD", name: str | None = None) -> str:
    """As Entra stores it: ARM casing, not the lower-cased form the responder keys by."""
    return (
        f"[AzureResourceId]:/subscriptions/{vm.subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.Compute/virtualMachines/{name or vm.name.upper()}"
    )


def intune(
    record_id: str = "md-1",
    name: str = "avd-01",
    device_id: str | None = "dev-1",
    *,
    model: str = "Virtual Machine",
    enrolled: datetime = CREATED + timedelta(hours=1),
    synced: datetime = STOPPED - timedelta(hours=1),
) -> ManagedDevice:
    return ManagedDevice(record_id, name, device_id, model, enrolled_at=enrolled, last_sync_at=synced)


def entra(
    object_id: str = "obj-1",
    name: str = "avd-01",
    device_id: str = "dev-1",
    *,
    physical_ids: tuple[str, ...] = (),
    signed_in: datetime | None = None,
    registered: datetime | None = None,
    hybrid: bool = False,
) -> EntraDevice:
    return EntraDevice(
        object_id,
        device_id,
        name,
        "ServerAd" if hybrid else "AzureAd",
        physical_ids=physical_ids,
        on_premises_sync_enabled=hybrid,
        last_sign_in_at=signed_in,
        registered_at=registered,
    )


def test_a_hybrid_object_of_the_vms_name_is_not_proof_while_its_join_is_unknown() -> None:
    """A template's JsonADDomainExtension lands minutes after the VM: until then another AD-joined
    machine of the same name must not pass for this VM's."""
    result = decide_ownership(HERE, [intune()], [entra(hybrid=True)], quiet_since=STOPPED)

    assert result.verdict is Verdict.AMBIGUOUS
    assert "not known to join an AD domain" in result.reason


def test_exact_name_with_a_consistent_link_to_a_hybrid_object_of_an_ad_joined_vm_is_own() -> None:
    result = decide_ownership(AD_HERE, [intune()], [entra(hybrid=True)], quiet_since=STOPPED)
    assert result.verdict is Verdict.OWN
    assert result.own is not None
    assert result.own.managed is not None
    assert result.own.managed.id == "md-1"


def test_an_entra_joined_object_without_an_anchor_is_not_proven_by_its_name() -> None:
    result = decide_ownership(HERE, [intune()], [entra()])
    assert result.verdict is Verdict.AMBIGUOUS
    assert "without a physicalIds anchor" in result.reason


def test_an_entra_joined_vm_does_not_own_a_hybrid_object() -> None:
    entra_joined = subject(VM, vm_id="vmid-now", computer_name="avd-01", join_kind="entra")
    result = decide_ownership(entra_joined, [intune()], [entra(hybrid=True)])
    assert result.verdict is Verdict.NOT_OWN


def test_an_ad_joined_vm_does_not_own_a_cloud_joined_object() -> None:
    domain_joined = subject(VM, vm_id="vmid-now", computer_name="avd-01", join_kind="domain")
    result = decide_ownership(domain_joined, [intune()], [entra(physical_ids=(arm_anchor(VM),))])
    assert result.verdict is Verdict.NOT_OWN


def test_an_anchor_to_this_vm_in_arm_casing_is_own_without_a_known_name() -> None:
    nameless = subject(VM, vm_id="vmid-now")
    result = decide_ownership(nameless, [intune()], [entra(physical_ids=(arm_anchor(VM),))])
    assert result.verdict is Verdict.OWN


# Class 1: a name match whose physicalIds anchor it to another VM.
def test_a_name_match_anchored_to_another_running_vm_is_not_own() -> None:
    other = VmRef(SUB, "rg-avd", "vm-02")
    result = decide_ownership(HERE, [intune()], [entra(physical_ids=(arm_anchor(other),))], quiet_since=STOPPED)
    assert result.verdict is Verdict.NOT_OWN
    assert "anchor it to" in result.candidates[0].reasons[0]


def test_a_name_match_anchored_to_a_vm_in_another_subscription_is_not_own() -> None:
    other = VmRef(OTHER_SUB, "rg-avd", "vm-01")  # same resource group and name, another subscription
    result = decide_ownership(HERE, [intune()], [entra(physical_ids=(arm_anchor(other),))])
    assert result.verdict is Verdict.NOT_OWN


def test_a_ledger_mapping_is_no_bypass_around_an_anchor_to_another_vm() -> None:
    known = DeviceMapping("vmid-now", managed_device_id="md-1", entra_object_id="obj-1")
    other = VmRef(SUB, "rg-avd", "vm-02")
    result = decide_ownership(HERE, [intune()], [entra(physical_ids=(arm_anchor(other),))], known=known)
    assert result.verdict is Verdict.NOT_OWN


# Class 2: the azureADDeviceId "confirmation" must confirm.
def test_an_entra_object_named_for_another_vm_does_not_confirm_the_match() -> None:
    result = decide_ownership(HERE, [intune()], [entra(name="avd-02")])
    assert result.verdict is Verdict.NOT_OWN


def test_an_entra_object_claimed_by_two_intune_records_is_ambiguous() -> None:
    records = [intune("md-1"), intune("md-2", name="avd-01-old")]
    result = decide_ownership(HERE, records, [entra()])
    assert result.verdict is not Verdict.OWN
    assert any("claim the same Entra object" in reason for c in result.candidates for reason in c.reasons)


def test_two_entra_objects_with_one_device_id_are_ambiguous() -> None:
    result = decide_ownership(HERE, [intune()], [entra("obj-1"), entra("obj-2")])
    assert result.verdict is Verdict.AMBIGUOUS


def test_an_exact_name_without_an_entra_object_is_not_proof() -> None:
    result = decide_ownership(HERE, [intune()], [])
    assert result.verdict is Verdict.AMBIGUOUS


# Class 3: activity after the deletion, on Intune or Entra.
def test_an_entra_sign_in_after_the_vm_stopped_means_another_machine() -> None:
    result = decide_ownership(HERE, [intune()], [entra(signed_in=STOPPED + timedelta(hours=2))], quiet_since=STOPPED)
    assert result.verdict is Verdict.NOT_OWN
    assert "signed in to Entra" in result.candidates[0].reasons[0]


def test_an_intune_check_in_after_the_vm_stopped_means_another_machine() -> None:
    result = decide_ownership(HERE, [intune(synced=STOPPED + timedelta(minutes=5))], [entra()], quiet_since=STOPPED)
    assert result.verdict is Verdict.NOT_OWN


# Class 4: an unknown computer name is never replaced by the resource name.
def test_an_unknown_computer_name_proves_nothing_by_name() -> None:
    nameless = subject(VmRef(SUB, "rg-avd", "avd-01"), vm_id="vmid-now")
    result = decide_ownership(nameless, [intune()], [entra()])
    assert result.verdict is Verdict.NOT_OWN


def test_a_computer_name_other_than_the_resource_name_is_matched_on_the_computer_name() -> None:
    result = decide_ownership(HERE, [intune(name="vm-01")], [entra(name="vm-01")])
    assert result.verdict is Verdict.NOT_OWN  # vm-01 is the resource name; the computer is avd-01


# Class 6: a saved mapping is bound to the vmId it was learnt for.
def test_a_mapping_learnt_for_an_earlier_vm_under_the_same_resource_id_is_not_own() -> None:
    known = DeviceMapping("vmid-before", managed_device_id="md-1", entra_object_id="obj-1")
    result = decide_ownership(HERE, [intune()], [entra()], known=known)
    assert result.verdict is Verdict.NOT_OWN
    assert "earlier VM" in result.candidates[0].reasons[0]


def test_a_record_enrolled_before_this_vm_was_created_is_an_earlier_machines() -> None:
    old = intune(enrolled=CREATED - timedelta(days=3))
    result = decide_ownership(HERE, [old], [entra()])
    assert result.verdict is Verdict.NOT_OWN


def test_a_hybrid_entra_object_older_than_the_vm_still_confirms_its_new_intune_record() -> None:
    # The on-premises computer account outlives a re-created VM; its Entra object keeps its registration date.
    reused = entra(registered=CREATED - timedelta(days=300), hybrid=True)
    assert decide_ownership(AD_HERE, [intune()], [reused]).verdict is Verdict.OWN


def test_a_mapping_learnt_for_this_vm_is_own() -> None:
    known = DeviceMapping("vmid-now", managed_device_id="md-1", entra_object_id="obj-1", entra_device_id="dev-1")
    assert decide_ownership(HERE, [intune()], [entra()], known=known).verdict is Verdict.OWN


def test_two_vm_records_with_the_vms_name_are_ambiguous() -> None:
    records = [intune("md-1", device_id="dev-1"), intune("md-2", device_id="dev-2")]
    objects = [entra("obj-1", device_id="dev-1"), entra("obj-2", device_id="dev-2")]
    result = decide_ownership(HERE, records, objects)
    assert result.verdict is Verdict.AMBIGUOUS


def test_a_physical_pc_with_the_vms_name_is_not_own_and_not_in_the_way() -> None:
    laptop = intune("md-9", device_id="dev-9", model="Surface Laptop 5")
    ad_joined = AD_HERE
    result = decide_ownership(ad_joined, [intune(), laptop], [entra(hybrid=True), entra("obj-9", device_id="dev-9")])
    assert result.verdict is Verdict.OWN
    assert result.own is not None
    assert result.own.managed is not None
    assert result.own.managed.id == "md-1"


def test_look_alike_names_are_not_own() -> None:
    for name in ("avd-010", "avd-0", "xavd-01", "avd-01-pc"):
        result = decide_ownership(HERE, [intune(name=name)], [entra(name=name)])
        assert result.verdict is Verdict.NOT_OWN, name


def test_names_compare_case_insensitively() -> None:
    ad_joined = AD_HERE
    result = decide_ownership(ad_joined, [intune(name="AVD-01")], [entra(name="Avd-01", hybrid=True)])
    assert result.verdict is Verdict.OWN


def test_an_anchor_to_this_vm_under_another_name_is_ambiguous() -> None:
    result = decide_ownership(HERE, [intune(name="other")], [entra(name="other", physical_ids=(arm_anchor(VM),))])
    assert result.verdict is Verdict.AMBIGUOUS


def test_an_all_zero_device_id_links_to_nothing() -> None:
    record = intune(device_id="00000000-0000-0000-0000-000000000000")
    stray = entra("obj-0", device_id="00000000-0000-0000-0000-000000000000")
    result = decide_ownership(HERE, [record], [stray])
    assert result.verdict is Verdict.AMBIGUOUS  # the Intune record alone: nothing confirms it
    assert all(c.entra is None or c.managed is None for c in result.candidates)
