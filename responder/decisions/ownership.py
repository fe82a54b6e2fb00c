"""Is this Intune/Entra record this VM's own? One pure decision for every path that writes.

Deallocate, start, cleanup and reconciliation all ask the same question before they
touch a record, and all get the answer from `decide_ownership`: for each candidate
(an Intune record with the Entra object its `azureADDeviceId` names, or an Entra
object alone) the evidence for and against, and a verdict:

- `not-own`: a fact ties it to something else: a physical model, a `physicalIds`
  anchor naming another VM, another computer name, enrolment before this VM was
  created, activity after this VM stopped, or a ledger mapping learnt for an
  earlier VM under the same resource id.
- `ambiguous`: nothing rules it out but something is inconsistent (two Entra
  objects share its deviceId, two Intune records claim one Entra object, an
  anchor to this VM under another name, the name carried by several VM records).
- `own`: proven, by a ledger mapping learnt for this very vmId, by a `physicalIds`
  anchor naming this VM, or by the exact computer name on both the Intune record
  and its one Entra object with the deviceId link consistent both ways.

Only a single `own` candidate is ever acted on; everything else is left alone and
reported. The caller gathers the candidates (I/O); this module only judges them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from responder.decisions.facts import EntraDevice, ManagedDevice
from responder.decisions.model import DeviceMapping, Incarnation, VmRef

ANCHOR_PREFIX = "[azureresourceid]:"
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"  # Intune's azureADDeviceId of a device with no Entra object


class Verdict(StrEnum):
    OWN = "own"
    NOT_OWN = "not-own"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class Subject:
    """The VM whose records are judged: its resource id, and what is known of the incarnation
    now under it (a record proven for an earlier one is not evidence about this one)."""

    vm: VmRef
    incarnation: Incarnation = field(default_factory=Incarnation)

    @property
    def anchor_spellings(self) -> tuple[str, ...]:
        """How Entra may have stored this VM's anchor: as ARM spells the id, and with ARM's segment casing."""
        spellings = (self.incarnation.arm_id, self.vm.arm_cased_id)
        return tuple(dict.fromkeys(spelling for spelling in spellings if spelling))


@dataclass(frozen=True, slots=True)
class Candidate:
    """One record (Intune and/or Entra), the verdict on it, and why."""

    managed: ManagedDevice | None
    entra: EntraDevice | None
    verdict: Verdict
    reasons: tuple[str, ...]

    @property
    def label(self) -> str:
        parts = []
        if self.managed is not None:
            parts.append(f"Intune {self.managed.id} ({self.managed.device_name})")
        if self.entra is not None:
            parts.append(f"Entra {self.entra.object_id} ({self.entra.display_name})")
        return " + ".join(parts)

    def describe(self) -> str:
        return f"{self.label}: {self.verdict.value}, {'; '.join(self.reasons)}"

    @property
    def device(self) -> DeviceMapping:
        """Its ids, as the ledger keeps a proven device (`observe.learn_device` dates them to the vmId)."""
        managed, entra = self.managed, self.entra
        return DeviceMapping(
            managed_device_id=managed.id if managed else None,
            entra_device_id=entra.device_id if entra else (managed.azure_ad_device_id if managed else None),
            entra_object_id=entra.object_id if entra else None,
        )


@dataclass(frozen=True, slots=True)
class Ownership:
    """The answer: the one record proven to be the VM's (or none), and every candidate judged."""

    verdict: Verdict  # OWN: exactly one proven; AMBIGUOUS: more than one could be; NOT_OWN: none is
    own: Candidate | None
    candidates: tuple[Candidate, ...]
    reason: str

    @property
    def left_alone(self) -> tuple[Candidate, ...]:
        """Candidates not acted on that a person may want to look at."""
        return tuple(c for c in self.candidates if c is not self.own and c.verdict is not Verdict.NOT_OWN)


def anchors(device: EntraDevice) -> set[str]:
    """The resource ids an Entra device's `physicalIds` name, normalised (ARM ids are case-insensitive)."""
    found = set()
    for value in device.physical_ids:
        text = value.strip()
        if text.lower().startswith(ANCHOR_PREFIX):
            found.add(text[len(ANCHOR_PREFIX) :].strip().rstrip("/").lower())
    return found


def device_id_of(device: ManagedDevice) -> str | None:
    """The Entra deviceId an Intune record links to (None for the all-zero 'no Entra object')."""
    value = (device.azure_ad_device_id or "").strip().lower()
    return value if value and value != EMPTY_GUID else None


def decide_ownership(
    subject: Subject,
    managed: Iterable[ManagedDevice],
    entra: Iterable[EntraDevice],
    *,
    known: DeviceMapping | None = None,
    quiet_since: datetime | None = None,
) -> Ownership:
    """Judge every gathered record; `quiet_since`: when the VM stopped being able to act
    (its deallocation or deletion), so later activity proves the record is another machine's."""
    managed_by_id = {record.id: record for record in managed}
    entra_by_object = {obj.object_id: obj for obj in entra}
    entra_by_device_id: dict[str, list[EntraDevice]] = {}
    for obj in entra_by_object.values():
        if obj.device_id:
            entra_by_device_id.setdefault(obj.device_id.lower(), []).append(obj)
    claims: dict[str, list[str]] = {}
    for record in managed_by_id.values():
        if (linked_id := device_id_of(record)) is not None:
            claims.setdefault(linked_id, []).append(record.id)

    judge = _Judge(subject, known, quiet_since, claims, list(managed_by_id.values()))
    candidates: list[Candidate] = []
    linked: set[str] = set()
    for record in managed_by_id.values():
        linked_id = device_id_of(record)
        objects = entra_by_device_id.get(linked_id, []) if linked_id else []
        linked.update(obj.object_id for obj in objects)
        candidates.append(judge.candidate(record, objects))
    for obj in entra_by_object.values():
        if obj.object_id not in linked:
            candidates.append(judge.candidate(None, [obj]))
    return _overall(tuple(candidates))


def _overall(candidates: tuple[Candidate, ...]) -> Ownership:
    owned = [c for c in candidates if c.verdict is Verdict.OWN]
    doubtful = [c for c in candidates if c.verdict is Verdict.AMBIGUOUS]
    if len(owned) == 1:
        return Ownership(Verdict.OWN, owned[0], candidates, f"{owned[0].label} is this VM's: {owned[0].reasons[-1]}")
    if len(owned) > 1:
        labels = ", ".join(c.label for c in owned)
        return Ownership(Verdict.AMBIGUOUS, None, candidates, f"{len(owned)} records could be this VM's ({labels})")
    if doubtful:
        detail = "; ".join(c.describe() for c in doubtful)
        return Ownership(Verdict.AMBIGUOUS, None, candidates, f"no record is proven to be this VM's: {detail}")
    if candidates:
        detail = "; ".join(c.describe() for c in candidates)
        return Ownership(Verdict.NOT_OWN, None, candidates, f"no record is this VM's: {detail}")
    return Ownership(Verdict.NOT_OWN, None, candidates, "no Intune or Entra record found for this VM")


class _Judge:
    """The evidence rules, applied to one candidate at a time."""

    def __init__(
        self,
        subject: Subject,
        known: DeviceMapping | None,
        quiet_since: datetime | None,
        claims: dict[str, list[str]],
        managed: Sequence[ManagedDevice],
    ) -> None:
        self.incarnation = subject.incarnation
        self.resource_id = subject.vm.resource_id
        self.known = known if known is not None and not known.empty else None
        self.quiet_since = quiet_since
        self.claims = claims
        self.managed = managed
        self.name = (subject.incarnation.computer_name or "").strip().lower() or None

    def candidate(self, managed: ManagedDevice | None, objects: list[EntraDevice]) -> Candidate:
        entra = objects[0] if len(objects) == 1 else None
        verdict, reasons = self._judge(managed, entra, objects)
        return Candidate(managed, entra, verdict, tuple(reasons))

    def _judge(
        self, managed: ManagedDevice | None, entra: EntraDevice | None, objects: list[EntraDevice]
    ) -> tuple[Verdict, list[str]]:
        elsewhere = self._tied_elsewhere(managed, entra, objects)
        if elsewhere is not None:
            return Verdict.NOT_OWN, [elsewhere]
        reasons: list[str] = []
        anchored_here = any(self.resource_id in anchors(obj) for obj in objects)
        known_here = self._learnt_for_this_vm(managed, entra)
        if anchored_here:
            reasons.append("its Entra object's physicalIds anchor it to this VM")
        if known_here:
            reasons.append(f"the ledger learnt it for this VM (vmId {self.incarnation.vm_id})")
        mismatch = self._name_mismatch(managed, entra)
        if mismatch is not None:
            if anchored_here or known_here:
                return Verdict.AMBIGUOUS, [*reasons, f"but {mismatch}"]
            return Verdict.NOT_OWN, [mismatch]
        inconsistent = self._inconsistent_link(managed, entra, objects)
        if inconsistent is not None:
            return Verdict.AMBIGUOUS, [*reasons, inconsistent]
        if known_here or anchored_here:
            return Verdict.OWN, reasons
        return self._by_name(managed, entra)

    def _tied_elsewhere(
        self, managed: ManagedDevice | None, entra: EntraDevice | None, objects: list[EntraDevice]
    ) -> str | None:
        """A fact that ties the record to something else than this VM, or None."""
        if managed is not None and not managed.is_virtual_machine:
            return f"Intune says model {managed.model or 'unknown'!r}: not a virtual machine"
        for obj in objects:
            elsewhere = sorted(anchors(obj) - {self.resource_id})
            if elsewhere:
                return f"its Entra object's physicalIds anchor it to {elsewhere[0]}"
        if (wrong_join := self._other_join(entra)) is not None:
            return wrong_join
        if self.known is not None and self._learnt_for_another_vm(self.known, managed, entra):
            return (
                f"the ledger learnt this record for an earlier VM under this resource id "
                f"(vmId {self.known.learnt_for_vm_id}, now {self.incarnation.vm_id})"
            )
        return self._before_creation(managed, entra) or self._active_after(managed, entra)

    def _other_join(self, entra: EntraDevice | None) -> str | None:
        """An Entra-joined VM's object is cloud-joined; an AD-joined VM's is hybrid (synced)."""
        kind = self.incarnation.join_kind
        if entra is None or kind is None:
            return None
        if kind == "entra" and entra.is_hybrid:
            return "its Entra object is hybrid-joined, but this VM joins Entra directly (AADLoginForWindows)"
        if kind == "domain" and not entra.is_hybrid:
            return "its Entra object is cloud-joined, but this VM joins an AD domain (hybrid)"
        return None

    def _inconsistent_link(
        self, managed: ManagedDevice | None, entra: EntraDevice | None, objects: list[EntraDevice]
    ) -> str | None:
        """The deviceId link must be unique both ways: one Entra object, claimed by one Intune record."""
        if len(objects) > 1:
            return f"{len(objects)} Entra objects share its deviceId ({', '.join(obj.object_id for obj in objects)})"
        if entra is not None and entra.device_id:
            claimants = self.claims.get(entra.device_id.lower(), [])
            others = [claimant for claimant in claimants if managed is None or claimant != managed.id]
            if others:
                return f"Intune record(s) {', '.join(others)} claim the same Entra object"
        return None

    def _by_name(self, managed: ManagedDevice | None, entra: EntraDevice | None) -> tuple[Verdict, list[str]]:
        """The weakest proof: exact computer name on both records, one VM record of that name."""
        if self.name is None:
            return Verdict.NOT_OWN, ["the VM's computer name is unknown, and no anchor or ledger mapping names it"]
        if managed is None:
            return Verdict.NOT_OWN, [
                "only an Entra object with the VM's name: no Intune record, anchor or ledger mapping"
            ]
        if entra is None:
            return Verdict.AMBIGUOUS, ["the exact computer name, but no Entra object confirms it"]
        if entra.is_hybrid and self.incarnation.join_kind != "domain":
            # A deployment's join extension lands minutes after the VM: until then its join is unknown,
            # and a synced object of its name may be another AD-joined machine's.
            return Verdict.AMBIGUOUS, [
                "the exact computer name on a hybrid-joined object, but this VM is not known to join an AD domain "
                "(no JsonADDomainExtension seen): another machine may carry the name"
            ]
        if not entra.is_hybrid and not anchors(entra):
            # Entra-joined Azure VMs carry a physicalIds anchor; one without is likely another machine of that name.
            return Verdict.AMBIGUOUS, [
                "the exact computer name, but an Entra-joined object without a physicalIds anchor: "
                "Azure VMs carry one, so this may be another machine (an on-premises VM) of that name"
            ]
        namesakes = [
            device.id
            for device in self.managed
            if device.is_virtual_machine and _same_name(device.device_name, self.name) and device.id != managed.id
        ]
        if namesakes:
            return Verdict.AMBIGUOUS, [
                f"{len(namesakes) + 1} VM records carry the name {self.name!r} "
                f"({', '.join([managed.id, *namesakes])}): the symptom of a cloned image or a reused name"
            ]
        return Verdict.OWN, ["the exact computer name on the Intune record and its one Entra object, linked both ways"]

    def _name_mismatch(self, managed: ManagedDevice | None, entra: EntraDevice | None) -> str | None:
        if self.name is None:
            return None
        if managed is not None and managed.device_name and not _same_name(managed.device_name, self.name):
            return f"Intune names it {managed.device_name!r}, the VM's computer name is {self.name!r}"
        if entra is not None and entra.display_name and not _same_name(entra.display_name, self.name):
            return f"Entra names it {entra.display_name!r}, the VM's computer name is {self.name!r}"
        return None

    def _learnt_for_this_vm(self, managed: ManagedDevice | None, entra: EntraDevice | None) -> bool:
        known = self.known
        if known is None or not known.learnt_for_vm_id or known.learnt_for_vm_id != self.incarnation.vm_id:
            return False
        return _matches_known(known, managed, entra)

    def _learnt_for_another_vm(
        self, known: DeviceMapping, managed: ManagedDevice | None, entra: EntraDevice | None
    ) -> bool:
        if not known.learnt_for_vm_id or not self.incarnation.vm_id:
            return False
        return known.learnt_for_vm_id != self.incarnation.vm_id and _matches_known(known, managed, entra)

    def _before_creation(self, managed: ManagedDevice | None, entra: EntraDevice | None) -> str | None:
        created = self.incarnation.installed_since
        if created is None:
            return None
        # A hybrid object follows the on-premises computer account, which can outlive a re-created VM:
        # it is this VM's only when an Intune record enrolled since links to it.
        hybrid_vouched = entra is not None and entra.is_hybrid and managed is not None
        for what, moment in (
            ("enrolled in Intune", managed.enrolled_at if managed else None),
            ("registered in Entra", entra.registered_at if entra and not hybrid_vouched else None),
        ):
            if moment is not None and moment < created:
                return f"{what} at {moment.isoformat()}, before this VM was created at {created.isoformat()}"
        return None

    def _active_after(self, managed: ManagedDevice | None, entra: EntraDevice | None) -> str | None:
        quiet = self.quiet_since
        if quiet is None:
            return None
        for what, moment in (
            ("enrolled in Intune", managed.enrolled_at if managed else None),
            ("checked in with Intune", managed.last_sync_at if managed else None),
            ("registered in Entra", entra.registered_at if entra else None),
            ("signed in to Entra", entra.last_sign_in_at if entra else None),
        ):
            if moment is not None and moment > quiet:
                return (
                    f"{what} at {moment.isoformat()}, after this VM stopped at {quiet.isoformat()}: "
                    "another machine uses it (the name was reused)"
                )
        return None


def _matches_known(known: DeviceMapping, managed: ManagedDevice | None, entra: EntraDevice | None) -> bool:
    return bool(
        (managed is not None and known.managed_device_id == managed.id)
        or (entra is not None and known.entra_object_id == entra.object_id)
        or (entra is not None and entra.device_id and known.entra_device_id == entra.device_id)
    )


def _same_name(name: str | None, wanted: str) -> bool:
    """Windows computer names compare case-insensitively; never by prefix."""
    return name is not None and name.strip().lower() == wanted
