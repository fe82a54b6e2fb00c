"""Which Intune profiles and compliance policies reach a device, and what each asks of it. Pure.

Intune assigns a policy to groups (with exclusions), to all devices or to all users.
A device gets it when it is assigned to all devices, or to a group the device is in,
and none of its groups is excluded. User-targeted assignments (all users) are not
counted: they reach a host only once someone signs in, and not in device context.
Assignment filters are not evaluated (v1.0 doesn't describe them). The kinds
here are the ones the seed documents say a VM (or an AVD host) can't honour: the
rules in `responder.prerequisites` turn them into findings naming the policy.

Three shapes of policy reach the same rules: template profiles (`deviceConfiguration`,
their settings as named properties), compliance policies, and settings catalog and
Endpoint security policies (Graph beta `deviceManagementConfigurationPolicy`, whose
settings are instances named by a setting definition id, the CSP node in lower case:
`device_vendor_msft_bitlocker_requiredeviceencryption`). Each is a `Policy`; the
classifiers below read whichever shape it is.
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
# The Policy CSP node, as a custom profile's OMA-URI names it. OMA-URIs are compared case-insensitively,
# and a device-scope node may be written with or without `./Device` (Policy CSP, "device scope":
# `./Device/Vendor/MSFT/Policy/Config/...` or `./Vendor/MSFT/Policy/Config/...`).
REMOTE_CONNECTIONS_URIS = frozenset(
    {
        "./device/vendor/msft/policy/config/remotedesktopservices/allowuserstoconnectremotely",
        "./vendor/msft/policy/config/remotedesktopservices/allowuserstoconnectremotely",
    }
)

# Settings catalog and Endpoint security policies (Graph beta `deviceManagementConfigurationPolicy`).
CONFIGURATION_POLICY = "#microsoft.graph.devicemanagementconfigurationpolicy"
# BitLocker CSP settings (`./Device/Vendor/MSFT/BitLocker/...`): Endpoint security disk encryption
# (BitLocker profile) and the settings catalog's BitLocker category both write these.
BITLOCKER_SETTING_PREFIX = "device_vendor_msft_bitlocker_"
# Policy CSP RemoteDesktopServices/AllowUsersToConnectRemotely in the settings catalog (an ADMX-backed
# choice: option `<id>_0` is Disabled, `<id>_1` Enabled).
REMOTE_CONNECTIONS_SETTING = "device_vendor_msft_policy_config_remotedesktopservices_allowuserstoconnectremotely"
# Graph's `templateReference.templateFamily` of an Endpoint security policy → the node it is made in.
_TEMPLATE_FAMILIES = {
    "endpointsecuritydiskencryption": "Endpoint security disk encryption",
    "endpointsecurityantivirus": "Endpoint security antivirus",
    "endpointsecurityfirewall": "Endpoint security firewall",
    "endpointsecurityattacksurfacereduction": "Endpoint security attack surface reduction",
    "endpointsecurityendpointdetectionandresponse": "Endpoint security EDR",
    "endpointsecurityaccountprotection": "Endpoint security account protection",
    "baseline": "security baseline",
}


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
        if isinstance(setting, Mapping) and _is_remote_connections_uri(setting.get("omaUri"))
    ]
    if remote:
        kept["omaSettings"] = remote
    return kept


def configuration_policy_from_json(document: Mapping[str, Any], settings: Iterable[Mapping[str, Any]]) -> Policy:
    """A settings catalog or Endpoint security policy (Graph beta `deviceManagementConfigurationPolicy`, with
    its `assignments`) and its `deviceManagementConfigurationSetting`s. Only the setting instances the rules
    classify are kept (definition id and chosen value), nested ones (a choice's `children`, a group's) too."""
    kept = [
        {"settingDefinitionId": definition, "value": value}
        for definition, value in _setting_values(setting.get("settingInstance") for setting in settings)
        if _classified(definition)
    ]
    reference = document.get("templateReference")
    family = str(reference.get("templateFamily") or "") if isinstance(reference, Mapping) else ""
    assignments = document.get("assignments") or []
    return Policy(
        id=str(document.get("id")),
        display_name=str(document.get("name") or ""),
        category=CONFIGURATION,
        odata_type=str(document.get("@odata.type") or "#microsoft.graph.deviceManagementConfigurationPolicy"),
        settings={"templateFamily": family, "settingInstances": kept},
        targets=tuple(
            target_from_json(assignment["target"])
            for assignment in assignments
            if isinstance(assignment, Mapping) and isinstance(assignment.get("target"), Mapping)
        ),
    )


def made_in(policy: Policy) -> str:
    """Where an admin finds a settings catalog or Endpoint security policy (its template family)."""
    family = str(policy.settings.get("templateFamily") or "").lower()
    if family in {"", "none"}:
        return "settings catalog"
    return _TEMPLATE_FAMILIES.get(family, f"template family {policy.settings.get('templateFamily')}")


def _setting_values(instances: Iterable[Any]) -> Iterable[tuple[str, Any]]:
    """(setting definition id, value) of every setting instance, nested ones included. A choice's value is
    its option id; a simple value its `value` (a secret's is None: Intune never returns it in clear)."""
    for instance in instances:
        if not isinstance(instance, Mapping):
            continue
        definition = str(instance.get("settingDefinitionId") or "").lower()
        values: list[Any] = []
        for name in ("choiceSettingValue", "simpleSettingValue", "groupSettingValue"):
            if isinstance(instance.get(name), Mapping):
                values.append(instance[name])
        for name in ("choiceSettingCollectionValue", "simpleSettingCollectionValue", "groupSettingCollectionValue"):
            values.extend(value for value in instance.get(name) or [] if isinstance(value, Mapping))
        if not values:
            yield definition, None
        for value in values:
            secret = "secretsettingvalue" in str(value.get("@odata.type", "")).lower()
            if "value" in value or secret:
                yield definition, None if secret else value.get("value")
            elif not value.get("children"):
                yield definition, None
            yield from _setting_values(value.get("children") or [])


def _classified(definition: str) -> bool:
    return definition.startswith(BITLOCKER_SETTING_PREFIX) or definition == REMOTE_CONNECTIONS_SETTING


def _instances(policy: Policy) -> list[Mapping[str, Any]]:
    found = policy.settings.get("settingInstances") or []
    return [instance for instance in found if isinstance(instance, Mapping)]


def _is_remote_connections_uri(uri: Any) -> bool:
    return str(uri or "").strip().lower() in REMOTE_CONNECTIONS_URIS


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
    if odata_type == CONFIGURATION_POLICY:
        bitlocker = sorted(
            {
                str(instance["settingDefinitionId"])
                for instance in _instances(policy)
                if str(instance.get("settingDefinitionId")).startswith(BITLOCKER_SETTING_PREFIX)
                and not _disabled_option(instance)
            }
        )
        if bitlocker:
            return "bitlocker", f"{made_in(policy)}: {', '.join(bitlocker)}"
    return None


def tpm_requirements(policy: Policy) -> list[str]:
    """What a Windows compliance policy requires that needs a TPM or measured boot."""
    if policy.category != COMPLIANCE or policy.odata_type.lower() != WINDOWS_COMPLIANCE:
        return []
    return [name for name in TPM_COMPLIANCE_SETTINGS if policy.settings.get(name) is True]


def remote_connections_setting(policy: Policy) -> tuple[bool | None, str] | None:
    """RemoteDesktopServices/AllowUsersToConnectRemotely, set by a custom profile's OMA-URI or a settings
    catalog policy: (True: disabled, None: a value that can't be read, such as one Intune keeps encrypted;
    the evidence), or None when the policy doesn't set it or enables it."""
    if policy.category != CONFIGURATION:
        return None
    if policy.odata_type.lower() == CONFIGURATION_POLICY:
        return _remote_connections_choice(policy)
    if policy.odata_type.lower() != CUSTOM:
        return None
    for setting in policy.settings.get("omaSettings") or []:
        if not isinstance(setting, Mapping):
            continue
        if not _is_remote_connections_uri(setting.get("omaUri")):
            continue
        value = setting.get("value")
        shown = str(value).replace(" ", "").lower()
        if shown == "<disabled/>" or value == 0:
            return True, f"{setting.get('omaUri')} = {value}"
        if shown == "<enabled/>" or value == 1:
            return None
        return None, f"{setting.get('omaUri')} (value not readable)"
    return None


def _remote_connections_choice(policy: Policy) -> tuple[bool | None, str] | None:
    for instance in _instances(policy):
        if instance.get("settingDefinitionId") != REMOTE_CONNECTIONS_SETTING:
            continue
        option = str(instance.get("value") or "").lower()
        shown = f"{made_in(policy)}: {REMOTE_CONNECTIONS_SETTING} = {instance.get('value')}"
        if option == f"{REMOTE_CONNECTIONS_SETTING}_0":
            return True, shown
        if option == f"{REMOTE_CONNECTIONS_SETTING}_1":
            return None
        return None, f"{made_in(policy)}: {REMOTE_CONNECTIONS_SETTING} (value not readable)"
    return None


def _disabled_option(instance: Mapping[str, Any]) -> bool:
    """A choice whose option is `<definition id>_0`: the settings catalog's Disabled (or "No") of an
    on/off setting, which asks nothing of the device."""
    definition = str(instance.get("settingDefinitionId") or "")
    return str(instance.get("value") or "").lower() == f"{definition}_0"


def _configured(value: Any) -> bool:
    """A setting that asks for something: true, or a nested policy with something true in it."""
    if isinstance(value, Mapping):
        return any(_configured(inner) for key, inner in value.items() if not str(key).startswith("@odata"))
    return value is True
