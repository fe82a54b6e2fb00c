"""Can Intune manage this VM? The enrolment prerequisites of design §3 as pure rules.

Sources: Microsoft's "Using Windows virtual machines with Intune" and "Using
Azure Virtual Desktop with Intune". Each rule reads `CheckFacts` (no I/O) and
returns findings with a reason, the evidence it used and the document. Passing
rules say nothing; a Linux VM gets one "not applicable" finding and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from responder.decisions.facts import HostPool, ImageDefinition, Unreadable, VmFacts
from responder.decisions.joins import INTUNE_MDM_ID, domain_join, entra_join
from responder.decisions.model import Finding, FindingSource, Severity
from responder.decisions.os_identity import (
    BUILD_1809,
    BUILD_1903,
    ENTERPRISE,
    MULTI_SESSION,
    SERVER,
    OperatingSystem,
    identify_os,
)

if TYPE_CHECKING:  # the policies are read by the device-side rules alone: a create-time check doesn't load them
    from responder.decisions.intune_policies import AssignedPolicy, Policy

DOC_VM = "https://learn.microsoft.com/mem/intune/fundamentals/windows-10-virtual-machines"
DOC_AVD = "https://learn.microsoft.com/mem/intune/fundamentals/azure-virtual-desktop"
DOC_MULTI = "https://learn.microsoft.com/mem/intune/fundamentals/azure-virtual-desktop-multi-session"
DOC_CLONE = (
    "https://learn.microsoft.com/troubleshoot/mem/intune/device-enrollment/"
    "troubleshoot-windows-enrollment-errors#error-hr-0x8007064c-the-machine-is-already-enrolled"
)

MIN_AVD_AGENT = (1, 0, 2944, 1400)  # multi-session management needs this agent or newer

SELF_DEPLOYING = "windowsAzureADJoinUsingDeviceAuth"  # Intune's enrolment type of Autopilot self-deploying
AUTOPILOT_USER_DRIVEN = "windowsAzureADJoin"  # with an enrolment profile name: enrolled through Autopilot
# The Azure VM extension's join (AADLoginForWindows with `mdmId`) is beta's azureAdJoinUsingAzureVmExtension;
# v1.0's enum lacks it and serves `unknownFutureValue`. Neither is Autopilot, so neither is a finding.
PROFILE_NAMES = {"bitlocker": "BitLocker", "dfci": "DFCI", "domainjoin": "Domain Join", "wifi": "Wi-Fi"}


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """The VM's own Intune record, once it enrolled, and the policies that reach it."""

    managed_device_id: str
    enrollment_type: str | None = None  # Intune deviceEnrollmentType
    enrollment_profile_name: str | None = None  # the Autopilot profile it enrolled through, if any
    policies: tuple[AssignedPolicy, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckFacts:
    """Everything the rules may look at. Device-side facts exist only once enrolled."""

    vm: VmFacts
    image_definition: ImageDefinition | None = None
    host_pool: HostPool | None = None
    # What ARM refused to show the app (403): the rule that needed it says so instead of deciding.
    image_unreadable: Unreadable | None = None
    host_pool_unreadable: Unreadable | None = None
    entra_ds_domains: frozenset[str] = frozenset()  # Entra Domain Services managed domains
    device: DeviceFacts | None = None
    # A VM with neither join extension isn't reported (yet): its device-side check is under way, and the
    # extensions a template or the portal writes after the VM may still land; or it found the VM's device
    # enrolled. Said once that check ends without a device (`responder.stages.creation.judge_finished`).
    hold_missing_join: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule and every rule id it can report: the ledger replaces a check's findings by these ids."""

    ids: frozenset[str]
    check: Callable[[CheckFacts, OperatingSystem], list[Finding]]

    def __call__(self, facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
        return self.check(facts, system)


def reports(*ids: str) -> Callable[[Callable[[CheckFacts, OperatingSystem], list[Finding]]], Rule]:
    """Declare the rule ids a rule function reports (`@reports("join")`)."""

    def declare(check: Callable[[CheckFacts, OperatingSystem], list[Finding]]) -> Rule:
        return Rule(frozenset(ids), check)

    return declare


@reports("os-edition")
def os_edition(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    if system.edition in {ENTERPRISE, MULTI_SESSION} and system.family in {"windows 10", "windows 11"}:
        return []
    if system.family == "unknown" or (system.edition is None and system.family != "windows server"):
        return [
            Finding(
                "os-edition",
                Severity.WARNING,
                "The Windows edition could not be determined; Intune manages Windows 10/11 Enterprise VMs only.",
                system.evidence,
                DOC_VM,
                phase=FindingSource.CREATE,
            )
        ]
    what = "Windows Server" if system.edition == SERVER else f"{system.family.title()} {system.edition}"
    return [
        Finding(
            "os-edition",
            Severity.ERROR,
            f"{what} is not supported: Intune manages Windows 10/11 Enterprise virtual machines.",
            system.evidence,
            DOC_VM,
            phase=FindingSource.CREATE,
        )
    ]


@reports("os-version")
def os_version(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    if system.family != "windows 10" or system.build is None:
        return []
    if system.edition == MULTI_SESSION and system.build < BUILD_1903:
        return [
            Finding(
                "os-version",
                Severity.ERROR,
                "Windows 10 Enterprise multi-session older than 1903 can't be managed by Intune.",
                f"{system.evidence} (build {system.build})",
                DOC_MULTI,
                phase=FindingSource.CREATE,
            )
        ]
    if system.build < BUILD_1809:
        return [
            Finding(
                "os-version",
                Severity.ERROR,
                "Windows 10 older than version 1809 can't be managed by Intune.",
                f"{system.evidence} (build {system.build})",
                DOC_AVD,
                phase=FindingSource.CREATE,
            )
        ]
    return []


# Windows 10 2004, 20H2 and 21H1 multi-session need the July 2021 update (KB5004237: revision 1110 of
# each build) or Intune's remote actions, remote sync among them, don't work correctly (DOC_MULTI).
JULY_2021_REVISION = 1110
NEEDS_JULY_2021 = {19041: "2004", 19042: "20H2", 19043: "21H1"}


@reports("os-update")
def multi_session_update(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    if system.edition != MULTI_SESSION or system.family != "windows 10" or system.build not in NEEDS_JULY_2021:
        return []
    found = re.match(r"^\d+\.\d+\.\d+\.(\d+)", facts.vm.os_version or "")  # the guest's 10.0.build.revision
    revision = int(found.group(1)) if found else None
    if revision is not None and revision >= JULY_2021_REVISION:
        return []
    version = NEEDS_JULY_2021[system.build]
    evidence = f"{system.evidence}; guest osVersion {facts.vm.os_version or 'not reported'}"
    if revision is None:  # the image says which build, not which update: the guest hasn't reported yet
        return [
            Finding(
                "os-update",
                Severity.INFO,
                f"Windows 10 {version} multi-session needs the July 2021 update (build {system.build}."
                f"{JULY_2021_REVISION}) or later, or Intune's remote actions (sync) don't work correctly and "
                "pending policies can take up to 8 hours to apply; the update level isn't known yet.",
                evidence,
                DOC_MULTI,
                phase=FindingSource.CREATE,
            )
        ]
    return [
        Finding(
            "os-update",
            Severity.WARNING,
            f"Windows 10 {version} multi-session is before the July 2021 update (build {system.build}."
            f"{JULY_2021_REVISION}): Intune's remote actions (sync) don't work correctly and pending policies can "
            "take up to 8 hours to apply. Install the July 2021 or a later update.",
            evidence,
            DOC_MULTI,
            phase=FindingSource.CREATE,
        )
    ]


@reports("host-pool", "avd-agent", "host-pool-unreadable")
def host_pool_persistence(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    if facts.host_pool_unreadable is not None:
        return [
            _unreadable(
                "host-pool-unreadable",
                "The AVD host pool of this session host",
                "the host-pool rule and the AVD-only device rules were not checked",
                facts.host_pool_unreadable,
                DOC_AVD,
            )
        ]
    pool = facts.host_pool
    if pool is None:
        return []
    kind = (pool.host_pool_type or "").lower()
    evidence = f"host pool {pool.name}: {pool.host_pool_type}, load balancer {pool.load_balancer_type}"
    if kind == "personal":
        return [
            Finding(
                "host-pool",
                Severity.INFO,
                "Personal AVD session host: the standard rule set applies.",
                evidence,
                DOC_AVD,
                phase=FindingSource.CREATE,
            )
        ]
    if kind == "pooled" and system.edition == MULTI_SESSION:
        findings = [
            Finding(
                "host-pool",
                Severity.INFO,
                "Pooled multi-session host: supported with the multi-session rule set "
                "(device-context configuration only; AVD agent 1.0.2944.1400 or newer).",
                evidence,
                DOC_MULTI,
                phase=FindingSource.CREATE,
            )
        ]
        if pool.agent_version and _version(pool.agent_version) < MIN_AVD_AGENT:
            findings.append(
                Finding(
                    "avd-agent",
                    Severity.WARNING,
                    "The AVD agent is older than 1.0.2944.1400, which multi-session management needs.",
                    f"agent {pool.agent_version}",
                    DOC_MULTI,
                    phase=FindingSource.CREATE,
                )
            )
        return findings
    return [
        Finding(
            "host-pool",
            Severity.WARNING,
            "A pooled single-session (non-persistent) host is not recommended for Intune: each "
            "re-created VM enrols again and leaves an orphaned record.",
            evidence,
            DOC_VM,
            phase=FindingSource.CREATE,
        )
    ]


@reports("join")
def join(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    entra = entra_join(facts.vm.extensions)
    domain = domain_join(facts.vm.extensions)
    if domain is not None and domain.lower() in facts.entra_ds_domains:
        return [
            Finding(
                "join",
                Severity.ERROR,
                "The VM joins an Entra Domain Services managed domain: such hosts can't be managed by Intune.",
                f"JsonADDomainExtension domain {domain}",
                DOC_AVD,
                phase=FindingSource.CREATE,
            )
        ]
    if entra is not None:
        mdm_id, evidence = entra
        if mdm_id is None or mdm_id.lower() != INTUNE_MDM_ID:
            return [
                Finding(
                    "join",
                    Severity.WARNING,
                    "Entra-joined without Intune auto-enrolment (no Intune mdmId): it will not enrol by itself.",
                    evidence,
                    DOC_AVD,
                    phase=FindingSource.CREATE,
                )
            ]
        return []
    if domain is not None:
        return [
            Finding(
                "join",
                Severity.INFO,
                "AD-joined: it enrols as a hybrid-joined device through the GPO auto-enrolment or "
                "Configuration Manager co-management.",
                f"JsonADDomainExtension domain {domain}",
                DOC_AVD,
                phase=FindingSource.CREATE,
            )
        ]
    if facts.hold_missing_join:
        return []
    return [
        Finding(
            "join",
            Severity.WARNING,
            "Neither Entra join (AADLoginForWindows) nor AD join (JsonADDomainExtension) was found: "
            "the VM will not enrol in Intune by itself.",
            ", ".join(extension.type for extension in facts.vm.extensions) or "no extensions",
            DOC_AVD,
            phase=FindingSource.CREATE,
        )
    ]


@reports("cloned-image", "image-unreadable")
def cloned_image(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    unreadable = facts.image_unreadable
    findings = (
        [
            _unreadable(
                "image-unreadable",
                "The VM's gallery image definition",
                "the cloned-image rule could not see whether the image is specialized",
                unreadable,
                DOC_CLONE,
            )
        ]
        if unreadable is not None
        else []
    )
    return findings + _clone(facts)


def _clone(facts: CheckFacts) -> list[Finding]:
    definition = facts.image_definition
    if definition is not None and (definition.os_state or "").lower() == "specialized":
        return [
            Finding(
                "cloned-image",
                Severity.ERROR,
                "Created from a specialized image: a clone of an enrolled machine fails to enrol "
                "(error 0x8007064c, the machine is already enrolled).",
                f"image definition {definition.id} osState {definition.os_state}",
                DOC_CLONE,
                phase=FindingSource.CREATE,
            )
        ]
    option = (facts.vm.os_disk_create_option or "").lower()
    if option in {"attach", "copy"}:
        return [
            Finding(
                "cloned-image",
                Severity.ERROR,
                "The OS disk is an attached copy: a clone of an enrolled machine fails to enrol (error 0x8007064c).",
                f"osDisk createOption {facts.vm.os_disk_create_option}",
                DOC_CLONE,
                phase=FindingSource.CREATE,
            )
        ]
    return []


@reports("autopilot", "oobe")
def autopilot(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    device = facts.device
    if device is None:
        return []
    evidence = f"Intune record {device.managed_device_id}: deviceEnrollmentType {device.enrollment_type}"
    if (device.enrollment_type or "") == SELF_DEPLOYING:
        return [
            _device_finding(
                "autopilot",
                Severity.ERROR,
                "Enrolled by Entra join with device authentication, the enrolment Autopilot self-deploying and "
                "pre-provisioning use: both need a physical TPM, which a VM doesn't have.",
                evidence,
                DOC_VM,
            )
        ]
    if (device.enrollment_type or "") == AUTOPILOT_USER_DRIVEN and device.enrollment_profile_name:
        return [
            _device_finding(
                "oobe",
                Severity.INFO,
                f"Enrolled through the Autopilot profile '{device.enrollment_profile_name}': OOBE, Autopilot and "
                "the Enrollment Status Page are not supported on a VM reached only over RDP.",
                f"{evidence}, enrollmentProfileName {device.enrollment_profile_name}",
                DOC_VM,
            )
        ]
    return []


# Template profiles Intune delivers to Enterprise multi-session (DOC_MULTI, "Create the configuration
# profile"): trusted, SCEP and PKCS certificates, and VPN (device tunnel). Any other template isn't
# delivered and reports "Not applicable"; so does every compliance setting outside the documented list
# (passwords, OS versions, Defender, firewall, antivirus...), the TPM-bound ones among them.
MULTI_SESSION_TEMPLATES = frozenset(
    {
        "#microsoft.graph.windows81trustedrootcertificate",
        "#microsoft.graph.windows81scepcertificateprofile",
        "#microsoft.graph.windows10pkcscertificateprofile",
        "#microsoft.graph.windows10vpnconfiguration",
    }
)


def applies_on(policy: Policy, system: OperatingSystem) -> bool:
    """Whether Intune applies the policy on this OS at all: on Enterprise multi-session a template profile
    (a `deviceConfiguration`, `#microsoft.graph.windows…`) outside MULTI_SESSION_TEMPLATES, and the
    compliance settings the rules read, are "Not applicable" (DOC_MULTI): nothing to report of them.
    Settings catalog and Endpoint security policies apply (the rules read their device-scope settings), except
    the deprecated *Windows 10 and later* Endpoint security profiles and security baselines (DOC_MULTI,
    "Endpoint security" and "Security baselines")."""
    if system.edition != MULTI_SESSION:
        return True
    from responder.decisions.intune_policies import CONFIGURATION, INTENT

    kind = policy.odata_type.lower()
    if kind == INTENT or str(policy.settings.get("templateFamily") or "").lower() == "baseline":
        return False  # Endpoint security needs the "Windows 10, Windows 11, and Windows Server" platform; no baselines
    if policy.category == CONFIGURATION:
        return not kind.startswith("#microsoft.graph.windows") or kind in MULTI_SESSION_TEMPLATES
    return False  # compliance: the TPM-bound settings aren't among those multi-session evaluates


@reports("tpm-profile", "tpm-compliance")
def tpm_bound(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    device = facts.device
    if device is None:
        return []
    from responder.decisions.intune_policies import TPM_COMPLIANCE_SETTINGS, profile_kind, tpm_requirements

    unsupported = {"bitlocker", "dfci"}
    if facts.host_pool is not None:
        unsupported |= {"domainjoin", "wifi"}
    findings = []
    for assigned in device.policies:
        policy = assigned.policy
        if not applies_on(policy, system):
            continue
        kind = profile_kind(policy)
        if kind is not None and kind[0] in unsupported:
            findings.append(
                _device_finding(
                    "tpm-profile",
                    Severity.WARNING,
                    f"The {PROFILE_NAMES[kind[0]]} profile {policy.label} is assigned: Intune doesn't support it "
                    f"on {'an AVD host' if kind[0] in {'domainjoin', 'wifi'} else 'a VM'}.{_unevaluated(assigned)}",
                    f"{policy.label} via {assigned.via}: {kind[1]}",
                    DOC_AVD if kind[0] in {"domainjoin", "wifi"} else DOC_VM,
                )
            )
        requirements = tpm_requirements(policy)
        if facts.host_pool is not None and requirements:
            wanted = ", ".join(TPM_COMPLIANCE_SETTINGS[name] for name in requirements)
            findings.append(
                _device_finding(
                    "tpm-compliance",
                    Severity.WARNING,
                    f"The compliance policy {policy.label} requires {wanted}: an AVD host reports it as noncompliant."
                    f"{_unevaluated(assigned)}",
                    f"{policy.label} via {assigned.via}: {', '.join(requirements)}",
                    DOC_AVD,
                )
            )
    return findings


@reports("remote-access")
def remote_access(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    if facts.host_pool is None or facts.device is None:
        return []
    from responder.decisions.intune_policies import remote_connections_setting

    findings = []
    for assigned in facts.device.policies:
        if not applies_on(assigned.policy, system):
            continue
        setting = remote_connections_setting(assigned.policy)
        if setting is None:
            continue
        disabled, shown = setting
        if disabled:
            message = (
                f"The profile {assigned.policy.label} disables RemoteDesktopServices/AllowUsersToConnectRemotely: "
                "users can't reach the AVD host."
            )
        else:  # Intune keeps custom values encrypted; reading one needs a write role this app doesn't hold
            message = (
                f"The profile {assigned.policy.label} sets RemoteDesktopServices/AllowUsersToConnectRemotely "
                "to a value this app can't read: make sure it doesn't disable remote connections to the AVD host."
            )
        severity = Severity.ERROR if disabled else Severity.WARNING
        evidence = f"{assigned.policy.label} via {assigned.via}: {shown}"
        findings.append(_device_finding("remote-access", severity, message + _unevaluated(assigned), evidence, DOC_AVD))
    return findings


def _unevaluated(assigned: AssignedPolicy) -> str:
    """What a finding adds when the policy's assignment filter couldn't be evaluated: it is reported, never
    silently counted or dropped, and the admin is told which filter and why."""
    if assigned.unevaluated is None:
        return ""
    return f" Its assignment filter was not evaluated ({assigned.unevaluated}): Intune may keep it from this device."


def _unreadable(rule_id: str, what: str, so: str, unreadable: Unreadable, doc: str) -> Finding:
    """A read ARM refused: a warning that names the role to grant, and where."""
    return Finding(
        rule_id,
        Severity.WARNING,
        f"{what} could not be read: ARM refused the app's identity, so {so}. Grant the app's identity the "
        f"Reader role (or a role with {unreadable.action}) on {_scope_name(unreadable.scope)}.",
        f"{unreadable.resource_id}: {unreadable.refusal}",
        doc,
        phase=FindingSource.CREATE,
    )


def _scope_name(scope: str) -> str:
    """`/subscriptions/s/resourceGroups/rg` → "resource group rg of subscription s"."""
    parts = scope.strip("/").split("/")
    if len(parts) >= 4 and parts[2].lower() == "resourcegroups":
        return f"resource group {parts[3]} of subscription {parts[1]}, or on that subscription"
    if len(parts) >= 2 and parts[0].lower() == "subscriptions":
        return f"subscription {parts[1]}"
    return scope


def _device_finding(rule_id: str, severity: Severity, message: str, evidence: str, doc: str) -> Finding:
    return Finding(rule_id, severity, message, evidence, doc, phase=FindingSource.DEVICE)


RULES: tuple[Rule, ...] = (os_edition, os_version, multi_session_update, host_pool_persistence, join, cloned_image)
# Read from Intune once the VM's device has enrolled (`responder.stages.device_check`).
DEVICE_RULES: tuple[Rule, ...] = (autopilot, tpm_bound, remote_access)
# The device check's findings when it found no device of the VM's (reconciliation looks again).
DEVICE_NOT_FOUND = frozenset({"not-enrolled", "device-unproven"})


def cannot_enrol(findings: tuple[Finding, ...]) -> bool:
    """The create-time check already says Intune can't manage this VM (Windows Server, Pro...)."""
    return any(finding.rule_id == "os-edition" and finding.severity is Severity.ERROR for finding in findings)


def check_device(facts: CheckFacts) -> list[Finding]:
    """The rules that need the enrolled device (its enrolment, the policies that reach it), in rule order."""
    system = identify_os(facts.vm)
    if system.family == "linux" or facts.device is None:
        return []
    return [finding for rule in DEVICE_RULES for finding in rule(facts, system)]


def check(facts: CheckFacts) -> list[Finding]:
    """Every create-time rule's findings, in rule order; a Linux VM is simply not applicable."""
    system = identify_os(facts.vm)
    if system.family == "linux":
        return [
            Finding(
                "not-applicable",
                Severity.INFO,
                "A Linux VM: the Windows enrolment rules don't apply.",
                system.evidence,
                phase=FindingSource.CREATE,
            )
        ]
    return [finding for rule in RULES for finding in rule(facts, system)]


def has_errors(findings: list[Finding]) -> bool:
    return any(finding.severity is Severity.ERROR for finding in findings)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))
