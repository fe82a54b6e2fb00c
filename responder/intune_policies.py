"""Which Intune profiles and compliance policies reach a device, and what each asks of it. Pure.

Intune assigns a policy to groups (with exclusions), to all devices or to all users.
A device gets it when it is assigned to all devices, or to a group the device is in,
and none of its groups is excluded. User-targeted assignments (all users) are not
counted: they reach a host only once someone signs in, and not in device context.
Assignment filters are not evaluated (v1.0 doesn't describe them). The kinds
here are the ones the seed documents say a VM (or an AVD host) can't honour: the
rules in `responder.prerequisites` turn them into findings naming the policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CONFIGURATION, COMPLIANCE = "configuration", "compliance"

# Graph's @odata.type of a target, lower case → what it targets.
_TARGETS = {
    "#microsoft.graph.alldevicesassignmenttarget": "all-devices",
    "#microsoft.graph.alllicensedusersassignmenttarget": "all-users",
    "#microsoft.graph.groupassignmenttarget": "group",
    "#microsoft.graph.exclusiongroupassignmenttarget": "exclusion",
}
# Profile types that are a kind by themselves (Graph beta types: v1.0 doesn't describe them).
_PROFILE_TYPES = {
    "#microsoft.graph.windows10devicefirmwareconfigurationinterface": "dfci",
    "#microsoft.graph.windowsdomainjoinconfiguration": "domainjoin",
    "#microsoft.graph.windowswificonfiguration": "wifi",
    "#microsoft.graph.windowswifienterpriseeapconfiguration": "wifi",
}
BETA_ONLY_PROFILE_TYPES = frozenset(_PROFILE_TYPES)
ENDPOINT_PROTECTION = "#microsoft.graph.windows10endpointprotectionconfiguration"
CUSTOM = "#microsoft.graph.windows10customconfiguration"
WINDOWS_COMPLIANCE = "#microsoft.graph.windows10compliancepolicy"
# The BitLocker settings of an endpoint protection profile (v1.0 windows10EndpointProtectionConfiguration).
BITLOCKER_SETTINGS = (
    "bitLockerEncryptDevice",
    "bitLockerDisableWarningForOtherDiskEncryption",
    "bitLockerRemovableDrivePolicy",
)
# Compliance settings Device Health Attestation reports (measured boot, with a TPM): an AVD host
# can't report them as met (v1.0 windows10CompliancePolicy).
TPM_COMPLIANCE_SETTINGS = {
    "bitLockerEnabled": "BitLocker",
    "secureBootEnabled": "Secure Boot",
    "codeIntegrityEnabled": "code integrity",
    "earlyLaunchAntiMalwareDriverEnabled": "early-launch anti-malware",
}
REMOTE_CONNECTIONS_URI = "./device/vendor/msft/policy/config/remotedesktopservices/allowuserstoconnectremotely"


@dataclass(frozen=True, slots=True)
class AssignmentTarget:
    kind: str  # all-devices | all-users | group | exclusion | other (all-users is not counted as reaching a device)
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A device configuration profile or a compliance policy, as Graph describes it."""

    id: str
    display_name: str
    category: str  # CONFIGURATION | COMPLIANCE
    odata_type: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    targets: tuple[AssignmentTarget, ...] = ()

    @property
    def label(self) -> str:
        return f"'{self.display_name}' ({self.id})"


@dataclass(frozen=True, slots=True)
class AssignedPolicy:
    """A policy that reaches the device, and how."""

    policy: Policy
    via: str  # "all devices", "group <id>"


def target_from_json(document: Mapping[str, Any]) -> AssignmentTarget:
    kind = _TARGETS.get(str(document.get("@odata.type", "")).lower(), "other")
    group = document.get("groupId")
    return AssignmentTarget(kind, str(group).lower() if group else None)


def settings_read(document: Mapping[str, Any]) -> dict[str, Any]:
    """Only the settings the rules read: a profile can carry secrets (a Wi-Fi key, a custom
    OMA-URI value), and nothing else of it is kept, even in memory."""
    kept: dict[str, Any] = {
        name: document[name] for name in (*BITLOCKER_SETTINGS, *TPM_COMPLIANCE_SETTINGS) if name in document
    }
    remote = [
        {"omaUri": setting.get("omaUri"), "value": setting.get("value")}
        for setting in document.get("omaSettings") or []
        if isinstance(setting, Mapping) and str(setting.get("omaUri", "")).strip().lower() == REMOTE_CONNECTIONS_URI
    ]
    if remote:
        kept["omaSettings"] = remote
    return kept


def assigned_to_device(policies: Iterable[Policy], group_ids: frozenset[str]) -> tuple[AssignedPolicy, ...]:
    """The policies that reach a device in `group_ids` (its groups, transitively, lower case)."""
    reached = []
    for policy in policies:
        via = assignment_of(policy, group_ids)
        if via is not None:
            reached.append(AssignedPolicy(policy, via))
    return tuple(reached)


def assignment_of(policy: Policy, group_ids: frozenset[str]) -> str | None:
    """How the policy reaches the device, or None (not targeted, or excluded: exclusion wins)."""
    targets = policy.targets
    if any(target.kind == "exclusion" and target.group_id in group_ids for target in targets):
        return None
    for target in targets:
        if target.kind == "all-devices":
            return "all devices"
    for target in targets:
        if target.kind == "group" and target.group_id in group_ids:
            return f"group {target.group_id}"
    return None


def profile_kind(policy: Policy) -> tuple[str, str] | None:
    """What a configuration profile does that a VM can't honour, and the settings that say so."""
    if policy.category != CONFIGURATION:
        return None
    odata_type = policy.odata_type.lower()
    if odata_type in _PROFILE_TYPES:
        return _PROFILE_TYPES[odata_type], f"profile type {policy.odata_type.removeprefix('#microsoft.graph.')}"
    if odata_type == ENDPOINT_PROTECTION:
        configured = [name for name in BITLOCKER_SETTINGS if _configured(policy.settings.get(name))]
        if configured:
            return "bitlocker", ", ".join(configured)
    return None


def tpm_requirements(policy: Policy) -> list[str]:
    """What a Windows compliance policy requires that needs a TPM or measured boot."""
    if policy.category != COMPLIANCE or policy.odata_type.lower() != WINDOWS_COMPLIANCE:
        return []
    return [name for name in TPM_COMPLIANCE_SETTINGS if policy.settings.get(name) is True]


def remote_connections_setting(policy: Policy) -> tuple[bool | None, str] | None:
    """A custom profile's RemoteDesktopServices/AllowUsersToConnectRemotely: (True: disabled,
    None: a value that can't be read, such as one Intune keeps encrypted; the evidence), or None
    when the profile doesn't set it or enables it."""
    if policy.category != CONFIGURATION or policy.odata_type.lower() != CUSTOM:
        return None
    for setting in policy.settings.get("omaSettings") or []:
        if not isinstance(setting, Mapping):
            continue
        if str(setting.get("omaUri", "")).strip().lower() != REMOTE_CONNECTIONS_URI:
            continue
        value = setting.get("value")
        shown = str(value).replace(" ", "").lower()
        if shown == "<disabled/>" or value == 0:
            return True, f"{setting.get('omaUri')} = {value}"
        if shown == "<enabled/>" or value == 1:
            return None
        return None, f"{setting.get('omaUri')} (value not readable)"
    return None


def _configured(value: Any) -> bool:
    """A setting that asks for something: true, or a nested policy with something true in it."""
    if isinstance(value, Mapping):
        return any(_configured(inner) for key, inner in value.items() if not str(key).startswith("@odata"))
    return value is True
