"""Can Intune manage this VM? The enrolment prerequisites of SPEC §3 as pure rules.

Sources: Microsoft's "Using Windows virtual machines with Intune" and "Using
Azure Virtual Desktop with Intune". Each rule reads `CheckFacts` (no I/O) and
returns findings with a reason, the evidence it used and the document. Passing
rules say nothing; a Linux VM gets one "not applicable" finding and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from responder.facts import Extension, HostPool, ImageDefinition, VmFacts
from responder.model import Finding

DOC_VM = "https://learn.microsoft.com/mem/intune/fundamentals/windows-10-virtual-machines"
DOC_AVD = "https://learn.microsoft.com/mem/intune/fundamentals/azure-virtual-desktop"
DOC_MULTI = "https://learn.microsoft.com/mem/intune/fundamentals/azure-virtual-desktop-multi-session"
DOC_CLONE = (
    "https://learn.microsoft.com/troubleshoot/mem/intune/device-enrollment/"
    "troubleshoot-windows-enrollment-errors#error-hr-0x8007064c-the-machine-is-already-enrolled"
)

# Windows 10 feature updates by Marketplace codename, and the build each shipped as.
WINDOWS_10_BUILDS = {
    "rs1": 14393,
    "rs2": 15063,
    "rs3": 16299,
    "rs4": 17134,
    "rs5": 17763,
    "19h1": 18362,
    "1903": 18362,
    "19h2": 18363,
    "20h1": 19041,
    "20h2": 19042,
    "21h1": 19043,
    "21h2": 19044,
    "22h2": 19045,
}
WINDOWS_11_BUILDS = {"21h2": 22000, "22h2": 22621, "23h2": 22631, "24h2": 26100, "25h2": 26200}
BUILD_1809 = 17763  # Windows 10 Enterprise: oldest supported
BUILD_1903 = 18362  # Windows 10 Enterprise multi-session: oldest supported
FIRST_WINDOWS_11_BUILD = 22000
MIN_AVD_AGENT = (1, 0, 2944, 1400)  # multi-session management needs this agent or newer
INTUNE_MDM_ID = "0000000a-0000-0000-c000-000000000000"  # the Intune MDM application id

ENTERPRISE, MULTI_SESSION, PRO, SERVER = "enterprise", "enterprise multi-session", "pro", "server"


@dataclass(frozen=True, slots=True)
class OperatingSystem:
    """Which Windows, as far as the image (or the guest agent) tells."""

    family: str  # "windows 10" | "windows 11" | "windows server" | "linux" | "unknown"
    edition: str | None  # ENTERPRISE | MULTI_SESSION | PRO | SERVER | None
    build: int | None
    evidence: str


@dataclass(frozen=True, slots=True)
class CheckFacts:
    """Everything the rules may look at. Device-side facts exist only once enrolled."""

    vm: VmFacts
    image_definition: ImageDefinition | None = None
    host_pool: HostPool | None = None
    enrollment_type: str | None = None  # Intune deviceEnrollmentType
    profiles: frozenset[str] = frozenset()  # kinds: bitlocker, dfci, domainJoin, wifi
    compliance_requires: frozenset[str] = frozenset()  # bitLocker, secureBoot, tpm
    remote_connections_disabled: bool | None = None  # RemoteDesktopServices/AllowUsersToConnectRemotely
    entra_ds_domains: frozenset[str] = frozenset()  # Entra Domain Services managed domains


def identify_os(vm: VmFacts) -> OperatingSystem:
    if (vm.os_type or "").lower() == "linux":
        return OperatingSystem("linux", None, None, f"osType {vm.os_type}")
    image = vm.image
    if image is not None and image.publisher and image.sku:
        from_image = _from_marketplace(image.publisher, image.offer or "", image.sku)
        if from_image is not None:
            return from_image
    if vm.os_name:
        return _from_guest(vm.os_name, vm.os_version)
    return OperatingSystem("unknown", None, None, "custom image and no guest agent report")


def _from_marketplace(publisher: str, offer: str, sku: str) -> OperatingSystem | None:
    evidence = f"image {publisher}:{offer}:{sku}"
    publisher, offer, sku = publisher.lower(), offer.lower(), sku.lower()
    if publisher == "microsoftwindowsserver":
        return OperatingSystem("windows server", SERVER, None, evidence)
    if publisher != "microsoftwindowsdesktop":
        return None
    tokens = sku.split("-")
    edition = PRO if {"pro", "pron"} & set(tokens) else None
    if {"ent", "entn", "enterprise", "enterprisen"} & set(tokens):
        edition = ENTERPRISE
    if {"evd", "avd"} & set(tokens):
        edition = MULTI_SESSION
    windows_11 = "windows-11" in offer or sku.startswith("win11")
    codename = next((token for token in tokens if token in WINDOWS_10_BUILDS or token in WINDOWS_11_BUILDS), None)
    if windows_11:
        return OperatingSystem("windows 11", edition, WINDOWS_11_BUILDS.get(codename or ""), evidence)
    return OperatingSystem("windows 10", edition, WINDOWS_10_BUILDS.get(codename or ""), evidence)


def _from_guest(os_name: str, os_version: str | None) -> OperatingSystem:
    evidence = f"guest reports {os_name} {os_version or ''}".strip()
    name = os_name.lower()
    build_match = re.match(r"^\d+\.\d+\.(\d+)", os_version or "")
    build = int(build_match.group(1)) if build_match else None
    if "server" in name:
        return OperatingSystem("windows server", SERVER, build, evidence)
    family = "windows 11" if "windows 11" in name or (build or 0) >= FIRST_WINDOWS_11_BUILD else "windows 10"
    edition = None
    if "enterprise" in name:
        edition = MULTI_SESSION if "multi-session" in name or "virtual desktop" in name else ENTERPRISE
    elif "pro" in name.split():
        edition = PRO
    return OperatingSystem(family, edition, build, evidence)


Rule = Callable[[CheckFacts, OperatingSystem], list[Finding]]


def os_edition(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    if system.edition in {ENTERPRISE, MULTI_SESSION} and system.family in {"windows 10", "windows 11"}:
        return []
    if system.family == "unknown" or (system.edition is None and system.family != "windows server"):
        return [
            Finding(
                "os-edition",
                "warning",
                "The Windows edition could not be determined; Intune manages Windows 10/11 Enterprise VMs only.",
                system.evidence,
                DOC_VM,
            )
        ]
    what = "Windows Server" if system.edition == SERVER else f"{system.family.title()} {system.edition}"
    return [
        Finding(
            "os-edition",
            "error",
            f"{what} is not supported: Intune manages Windows 10/11 Enterprise virtual machines.",
            system.evidence,
            DOC_VM,
        )
    ]


def os_version(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    if system.family != "windows 10" or system.build is None:
        return []
    if system.edition == MULTI_SESSION and system.build < BUILD_1903:
        return [
            Finding(
                "os-version",
                "error",
                "Windows 10 Enterprise multi-session older than 1903 can't be managed by Intune.",
                f"{system.evidence} (build {system.build})",
                DOC_MULTI,
            )
        ]
    if system.build < BUILD_1809:
        return [
            Finding(
                "os-version",
                "error",
                "Windows 10 older than version 1809 can't be managed by Intune.",
                f"{system.evidence} (build {system.build})",
                DOC_AVD,
            )
        ]
    return []


def host_pool_persistence(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    pool = facts.host_pool
    if pool is None:
        return []
    kind = (pool.host_pool_type or "").lower()
    evidence = f"host pool {pool.name}: {pool.host_pool_type}, load balancer {pool.load_balancer_type}"
    if kind == "personal":
        return [
            Finding(
                "host-pool",
                "info",
                "Personal AVD session host: the standard rule set applies.",
                evidence,
                DOC_AVD,
            )
        ]
    if kind == "pooled" and system.edition == MULTI_SESSION:
        findings = [
            Finding(
                "host-pool",
                "info",
                "Pooled multi-session host: supported with the multi-session rule set "
                "(device-context configuration only; AVD agent 1.0.2944.1400 or newer).",
                evidence,
                DOC_MULTI,
            )
        ]
        if pool.agent_version and _version(pool.agent_version) < MIN_AVD_AGENT:
            findings.append(
                Finding(
                    "avd-agent",
                    "warning",
                    "The AVD agent is older than 1.0.2944.1400, which multi-session management needs.",
                    f"agent {pool.agent_version}",
                    DOC_MULTI,
                )
            )
        return findings
    return [
        Finding(
            "host-pool",
            "warning",
            "A pooled single-session (non-persistent) host is not recommended for Intune: each "
            "re-created VM enrols again and leaves an orphaned record.",
            evidence,
            DOC_VM,
        )
    ]


def join(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    entra = _entra_join(facts.vm.extensions)
    domain = _domain_join(facts.vm.extensions)
    if domain is not None and domain.lower() in facts.entra_ds_domains:
        return [
            Finding(
                "join",
                "error",
                "The VM joins an Entra Domain Services managed domain: such hosts can't be managed by Intune.",
                f"JsonADDomainExtension domain {domain}",
                DOC_AVD,
            )
        ]
    if entra is not None:
        mdm_id, evidence = entra
        if mdm_id is None or mdm_id.lower() != INTUNE_MDM_ID:
            return [
                Finding(
                    "join",
                    "warning",
                    "Entra-joined without Intune auto-enrolment (no Intune mdmId): it will not enrol by itself.",
                    evidence,
                    DOC_AVD,
                )
            ]
        return []
    if domain is not None:
        return [
            Finding(
                "join",
                "info",
                "AD-joined: it enrols as a hybrid-joined device through the GPO auto-enrolment or "
                "Configuration Manager co-management.",
                f"JsonADDomainExtension domain {domain}",
                DOC_AVD,
            )
        ]
    return [
        Finding(
            "join",
            "warning",
            "Neither Entra join (AADLoginForWindows) nor AD join (JsonADDomainExtension) was found: "
            "the VM will not enrol in Intune by itself.",
            ", ".join(extension.type for extension in facts.vm.extensions) or "no extensions",
            DOC_AVD,
        )
    ]


def cloned_image(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    definition = facts.image_definition
    if definition is not None and (definition.os_state or "").lower() == "specialized":
        return [
            Finding(
                "cloned-image",
                "error",
                "Created from a specialized image: a clone of an enrolled machine fails to enrol "
                "(error 0x8007064c, the machine is already enrolled).",
                f"image definition {definition.id} osState {definition.os_state}",
                DOC_CLONE,
            )
        ]
    option = (facts.vm.os_disk_create_option or "").lower()
    if option in {"attach", "copy"}:
        return [
            Finding(
                "cloned-image",
                "error",
                "The OS disk is an attached copy: a clone of an enrolled machine fails to enrol (error 0x8007064c).",
                f"osDisk createOption {facts.vm.os_disk_create_option}",
                DOC_CLONE,
            )
        ]
    return []


def autopilot(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    if (facts.enrollment_type or "") == "windowsAzureADJoinUsingDeviceAuth":
        return [
            Finding(
                "autopilot",
                "error",
                "Autopilot self-deploying or pre-provisioning is targeted at this VM: both need a physical TPM.",
                f"deviceEnrollmentType {facts.enrollment_type}",
                DOC_VM,
            )
        ]
    if (facts.enrollment_type or "") == "windowsAzureADJoin" and "autopilot" in facts.profiles:
        return [
            Finding(
                "oobe",
                "info",
                "OOBE, Autopilot user-driven and the Enrollment Status Page are not available on an RDP-only VM.",
                "Autopilot profile assigned",
                DOC_VM,
            )
        ]
    return []


def tpm_bound(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    unsupported = {"bitlocker", "dfci"}
    if facts.host_pool is not None:
        unsupported |= {"domainjoin", "wifi"}
    findings = [
        Finding(
            "tpm-profile",
            "warning",
            f"A {kind} profile is assigned: Intune doesn't support it on this VM.",
            f"profile kind {kind}",
            DOC_AVD if kind in {"domainjoin", "wifi"} else DOC_VM,
        )
        for kind in sorted(kind.lower() for kind in facts.profiles)
        if kind in unsupported
    ]
    if facts.host_pool is not None:
        findings += [
            Finding(
                "tpm-compliance",
                "warning",
                f"A compliance policy requires {requirement}: an AVD host reports it as noncompliant.",
                f"compliance requires {requirement}",
                DOC_AVD,
            )
            for requirement in sorted(facts.compliance_requires)
        ]
    return findings


def remote_access(facts: CheckFacts, system: OperatingSystem) -> list[Finding]:
    if facts.host_pool is not None and facts.remote_connections_disabled:
        return [
            Finding(
                "remote-access",
                "error",
                "RemoteDesktopServices/AllowUsersToConnectRemotely is disabled: users can't reach the AVD host.",
                "policy RemoteDesktopServices/AllowUsersToConnectRemotely = disabled",
                DOC_AVD,
            )
        ]
    return []


# Every rule id a check can produce, so the ledger can replace the last check's findings.
PREREQUISITE_RULE_IDS = frozenset(
    {
        "os-edition",
        "os-version",
        "host-pool",
        "avd-agent",
        "join",
        "cloned-image",
        "autopilot",
        "oobe",
        "tpm-profile",
        "tpm-compliance",
        "remote-access",
        "not-applicable",
    }
)

RULES: tuple[Rule, ...] = (
    os_edition,
    os_version,
    host_pool_persistence,
    join,
    cloned_image,
    autopilot,
    tpm_bound,
    remote_access,
)


def check(facts: CheckFacts) -> list[Finding]:
    """Every rule's findings, in rule order; a Linux VM is simply not applicable."""
    system = identify_os(facts.vm)
    if system.family == "linux":
        return [
            Finding(
                "not-applicable",
                "info",
                "A Linux VM: the Windows enrolment rules don't apply.",
                system.evidence,
            )
        ]
    return [finding for rule in RULES for finding in rule(facts, system)]


def has_errors(findings: list[Finding]) -> bool:
    return any(finding.severity == "error" for finding in findings)


def join_kind(extensions: tuple[Extension, ...]) -> str | None:
    """How the VM joins a directory, from its extensions: `entra`, `domain` (hybrid), or None (unknown, or both)."""
    entra, domain = _entra_join(extensions) is not None, _domain_join(extensions) is not None
    if entra == domain:
        return None
    return "entra" if entra else "domain"


def _entra_join(extensions: tuple[Extension, ...]) -> tuple[str | None, str] | None:
    for extension in extensions:
        if extension.type.lower() == "aadloginforwindows":
            mdm_id = extension.settings.get("mdmId")
            return (str(mdm_id) if mdm_id else None), f"AADLoginForWindows mdmId {mdm_id or 'absent'}"
        if extension.type.lower() == "dsc":
            properties = extension.settings.get("properties") or {}
            if isinstance(properties, dict) and str(properties.get("aadJoin", "")).lower() == "true":
                mdm_id = properties.get("mdmId")
                return (str(mdm_id) if mdm_id else None), f"AVD DSC aadJoin, mdmId {mdm_id or 'absent'}"
    return None


def _domain_join(extensions: tuple[Extension, ...]) -> str | None:
    for extension in extensions:
        if extension.type.lower() == "jsonaddomainextension":
            return str(extension.settings.get("Name") or extension.settings.get("name") or "")
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))
