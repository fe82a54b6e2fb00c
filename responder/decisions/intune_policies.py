"""Which Intune profiles and compliance policies reach a device, and what each asks of it. Pure.

Intune assigns a policy to groups (with exclusions), to all devices or to all users.
A device gets it when it is assigned to all devices, or to a group the device is in,
and none of its groups is excluded. User-targeted assignments (all users) are not
counted: they reach a host only once someone signs in, and not in device context.
An assignment to all devices or to a group may carry an assignment filter (Graph beta
`deviceAndAppManagementAssignmentTarget.deviceAndAppManagementAssignmentFilterId`/`…FilterType`; v1.0's
target declares neither): an include filter lets the policy reach only devices its rule matches, an
exclude filter only those it doesn't. The rule is evaluated here against the device properties the
product reads (`evaluate_filter`); one it can't evaluate (a property it doesn't read, syntax it can't
parse, a filter it couldn't read) keeps the policy, with `AssignedPolicy.unevaluated` saying why. The kinds
here are the ones the seed documents say a VM (or an AVD host) can't honour: the
rules in `responder.decisions.prerequisites` turn them into findings naming the policy.

Three shapes of policy reach the same rules: template profiles (`deviceConfiguration`,
their settings as named properties), compliance policies, and settings catalog and
Endpoint security policies (Graph beta `deviceManagementConfigurationPolicy`, whose
settings are instances named by a setting definition id, the CSP node in lower case:
`device_vendor_msft_bitlocker_requiredeviceencryption`). Each is a `Policy`; the
classifiers below read whichever shape it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from responder.decisions.facts import EntraDevice, ManagedDevice

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
# Endpoint security profiles of the deprecated *Windows 10 and later* platform and security baselines made
# before the settings catalog templates (Graph beta `deviceManagementIntent`): existing ones can still be
# edited and used (memdocs, the Endpoint security settings articles for deprecated profiles). Their settings
# are `deviceManagementSettingInstance`s named `deviceConfiguration--<template profile type>_<property>`,
# the value JSON-encoded in `valueJson`: the BitLocker ones are the endpoint protection profile's properties.
INTENT = "#microsoft.graph.devicemanagementintent"
INTENT_SETTING_PREFIX = "deviceconfiguration--windows10endpointprotectionconfiguration_"
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
class AssignmentFilter:
    """An Intune assignment filter (Graph beta `deviceAndAppManagementAssignmentFilter`)."""

    id: str
    display_name: str
    rule: str
    platform: str | None = None

    @property
    def label(self) -> str:
        return f"'{self.display_name}' ({self.id})"


@dataclass(frozen=True, slots=True)
class AssignmentTarget:
    kind: str  # all-devices | all-users | group | exclusion | other (all-users is not counted as reaching a device)
    group_id: str | None = None
    filter_type: str = "none"  # none | include | exclude (Graph beta deviceAndAppManagementAssignmentFilterType)
    filter_id: str | None = None
    filter: AssignmentFilter | None = None  # the filter `filter_id` names, once the tenant's filters are read


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
    via: str  # "all devices", "group <id>", and the filter that let it through, if any
    unevaluated: str | None = None  # an assignment filter that couldn't be evaluated: which, and why


def target_from_json(document: Mapping[str, Any]) -> AssignmentTarget:
    kind = _TARGETS.get(str(document.get("@odata.type", "")).lower(), "other")
    group = document.get("groupId")
    filter_id = document.get("deviceAndAppManagementAssignmentFilterId")
    filter_type = str(document.get("deviceAndAppManagementAssignmentFilterType") or "none").lower()
    if not filter_id or filter_type not in {"include", "exclude"}:
        return AssignmentTarget(kind, str(group).lower() if group else None)
    return AssignmentTarget(kind, str(group).lower() if group else None, filter_type, str(filter_id).lower())


def filter_from_json(document: Mapping[str, Any]) -> AssignmentFilter:
    """A `deviceAndAppManagementAssignmentFilter` as Graph beta serves it."""
    platform = document.get("platform")
    return AssignmentFilter(
        id=str(document.get("id")).lower(),
        display_name=str(document.get("displayName") or ""),
        rule=str(document.get("rule") or ""),
        platform=str(platform) if platform else None,
    )


def with_filters(policy: Policy, filters: Mapping[str, AssignmentFilter]) -> Policy:
    """The policy with each of its targets' filter (by id, lower case) attached; an id not among `filters`
    stays unresolved (the check says it couldn't evaluate it)."""
    if not any(target.filter_id for target in policy.targets):
        return policy
    targets = tuple(
        replace(target, filter=filters.get(target.filter_id)) if target.filter_id else target
        for target in policy.targets
    )
    return replace(policy, targets=targets)


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


def intent_from_json(
    document: Mapping[str, Any], assignments: Iterable[Mapping[str, Any]], settings: Iterable[Mapping[str, Any]]
) -> Policy:
    """A legacy Endpoint security profile or security baseline (Graph beta `deviceManagementIntent`), its
    `deviceManagementIntentAssignment`s and `deviceManagementSettingInstance`s. Only the BitLocker settings
    the rules read are kept, by their endpoint protection profile names, their `valueJson` decoded."""
    names = {name.lower(): name for name in BITLOCKER_SETTINGS}
    kept: dict[str, Any] = {}
    for setting in settings:
        definition = str(setting.get("definitionId") or "").lower()
        name = (
            names.get(definition.removeprefix(INTENT_SETTING_PREFIX))
            if definition.startswith(INTENT_SETTING_PREFIX)
            else None
        )
        if name is not None:
            kept[name] = _decoded(setting.get("valueJson"))
    return Policy(
        id=str(document.get("id")),
        display_name=str(document.get("displayName") or ""),
        category=CONFIGURATION,
        odata_type=INTENT,
        settings=kept,
        targets=tuple(
            target_from_json(assignment["target"])
            for assignment in assignments
            if isinstance(assignment.get("target"), Mapping)
        ),
    )


def _decoded(value_json: Any) -> Any:
    """A setting's `valueJson` as a value (None when it isn't JSON: the setting then asks for nothing)."""
    try:
        return json.loads(str(value_json)) if value_json is not None else None
    except ValueError:
        return None


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


def assigned_to_device(
    policies: Iterable[Policy], group_ids: frozenset[str], device: Mapping[str, str | None] | None = None
) -> tuple[AssignedPolicy, ...]:
    """The policies that reach a device in `group_ids` (its groups, transitively, lower case) whose filter
    properties are `device` (filter property name → value; a name absent is a property not read)."""
    reached = []
    for policy in policies:
        assigned = assignment_of(policy, group_ids, device or {})
        if assigned is not None:
            reached.append(assigned)
    return tuple(reached)


def assignment_of(
    policy: Policy, group_ids: frozenset[str], device: Mapping[str, str | None] | None = None
) -> AssignedPolicy | None:
    """How the policy reaches the device, or None (not targeted, excluded (exclusion wins), or every
    assignment that targets it has a filter that keeps it away). A policy whose only targeting
    assignments have filters that can't be evaluated is kept, saying so."""
    targets = policy.targets
    if any(target.kind == "exclusion" and target.group_id in group_ids for target in targets):
        return None
    targeting = [(target, "all devices") for target in targets if target.kind == "all-devices"] + [
        (target, f"group {target.group_id}")
        for target in targets
        if target.kind == "group" and target.group_id in group_ids
    ]
    unevaluated: AssignedPolicy | None = None
    for target, via in targeting:
        try:
            passes, shown = _filter_passes(target, device or {})
        except UnevaluableFilter as problem:
            unevaluated = unevaluated or AssignedPolicy(policy, f"{via} ({problem.shown})", str(problem))
            continue
        if passes:
            return AssignedPolicy(policy, f"{via}{shown}")
    return unevaluated


class UnevaluableFilter(ValueError):
    """An assignment filter whose rule the product can't evaluate: the message says which, and why."""

    def __init__(self, message: str, shown: str = "") -> None:
        super().__init__(message)
        self.shown = shown


def _filter_passes(target: AssignmentTarget, device: Mapping[str, str | None]) -> tuple[bool, str]:
    """Whether the target's filter lets the policy reach the device, and how to name it in `via`."""
    if target.filter_id is None or target.filter_type not in {"include", "exclude"}:
        return True, ""
    found = target.filter
    if found is None:
        shown = f"{target.filter_type} filter {target.filter_id}"
        raise UnevaluableFilter(f"the {shown} is not among the tenant's assignment filters this app read", shown)
    shown = f"{target.filter_type} filter {found.label}"
    try:
        matched = evaluate_filter(found.rule, device)
    except UnevaluableFilter as problem:
        raise UnevaluableFilter(f"the {shown} could not be evaluated: {problem}", shown) from problem
    passes = matched if target.filter_type == "include" else not matched
    return passes, f", {shown} {'matched' if matched else 'not matched'}"


# --- Intune assignment filter rules ------------------------------------------------------------
# "([entity].[property name] [operation] [value])", joined by and/or, parentheses nested; properties,
# operations and values are case insensitive (memdocs: intune/fundamentals/filters-device-properties.md).
_TOKEN = re.compile(r'\s*(?:(?P<open>\()|(?P<close>\))|(?P<list>\[[^\]]*\])|"(?P<string>[^"]*)"|(?P<word>[^\s()\["]+))')
_STRING_OPERATORS: dict[str, Callable[[str | None, str], bool]] = {
    "eq": lambda value, wanted: value == wanted,
    "ne": lambda value, wanted: value != wanted,
    "startswith": lambda value, wanted: value is not None and value.startswith(wanted),
    "notstartswith": lambda value, wanted: value is None or not value.startswith(wanted),
    "endswith": lambda value, wanted: value is not None and value.endswith(wanted),
    "notendswith": lambda value, wanted: value is None or not value.endswith(wanted),
    "contains": lambda value, wanted: value is not None and wanted in value,
    "notcontains": lambda value, wanted: value is None or wanted not in value,
}
_LIST_OPERATORS = {"in": True, "notin": False}
# `operatingSystemVersion` is compared as a version (memdocs: "Enter a version value (using -eq, -ne, -gt,
# -ge, -lt, -le operators)"); every other property as a string.
_VERSION_OPERATORS: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
    "eq": lambda value, wanted: value == wanted,
    "ne": lambda value, wanted: value != wanted,
    "gt": lambda value, wanted: value > wanted,
    "ge": lambda value, wanted: value >= wanted,
    "lt": lambda value, wanted: value < wanted,
    "le": lambda value, wanted: value <= wanted,
}
VERSION_PROPERTIES = frozenset({"operatingsystemversion"})
# Intune's filter values for ownership (managedDeviceOwnerType) and join type (Entra's trustType; the
# filter names are Intune's, not Entra's: memdocs filters-device-properties, `deviceTrustType`).
_OWNERSHIP = {"company": "Corporate", "personal": "Personal"}
_TRUST_TYPES = {"azuread": "Azure AD joined", "serverad": "Hybrid Azure AD joined", "workplace": "Azure AD registered"}
Tokens = list[tuple[str, str]]
_NULLS = {"null", "$null"}


def filter_properties(managed: ManagedDevice, entra: EntraDevice | None) -> dict[str, str | None]:
    """The managed-device filter properties this app knows of a device, by Intune's names: from the Intune
    record (v1.0 `managedDevice`) and, for the join type, the device's proven Entra object. A property
    absent here (`operatingSystemSKU`, `cpuArchitecture`: v1.0 doesn't serve them; `deviceTrustType` while
    no Entra object is proven) makes a rule on it unevaluable, never guessed."""
    known: dict[str, str | None] = {
        "deviceName": managed.device_name,
        "model": managed.model,
        "manufacturer": managed.manufacturer,
        "enrollmentProfileName": managed.enrollment_profile_name,
        "deviceCategory": managed.category,
        "osVersion": managed.os_version,
        "operatingSystemVersion": managed.os_version,
        "deviceOwnership": _OWNERSHIP.get((managed.owner_type or "").lower(), "unknown"),
    }
    if entra is not None:
        known["deviceTrustType"] = _TRUST_TYPES.get((entra.trust_type or "").lower(), "Unknown")
    return known


def evaluate_filter(rule: str, device: Mapping[str, str | None]) -> bool:
    """Whether an assignment filter's rule matches a device with these properties (name → value; a name
    absent is a property the product doesn't read). Raises UnevaluableFilter naming the property or the
    syntax it couldn't read."""
    tokens = _tokens(rule)
    known = {name.lower(): value for name, value in device.items()}
    position, result = _or(tokens, 0, known)
    if position != len(tokens):
        raise UnevaluableFilter(f"unexpected {tokens[position][1]!r} in the rule {rule!r}")
    return result


def _tokens(rule: str) -> Tokens:
    found: Tokens = []
    position, text = 0, rule.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise UnevaluableFilter(f"can't read the rule {rule!r}")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    if not found:
        raise UnevaluableFilter("the rule is empty")
    return found


def _or(tokens: Tokens, at: int, device: Mapping[str, str | None]) -> tuple[int, bool]:
    at, result = _and(tokens, at, device)
    while at < len(tokens) and _ci(tokens[at], "or"):
        at, right = _and(tokens, at + 1, device)
        result = result or right
    return at, result


def _and(tokens: Tokens, at: int, device: Mapping[str, str | None]) -> tuple[int, bool]:
    at, result = _operand(tokens, at, device)
    while at < len(tokens) and _ci(tokens[at], "and"):
        at, right = _operand(tokens, at + 1, device)
        result = result and right
    return at, result


def _ci(token: tuple[str, str], word: str) -> bool:
    """Whether the token is the logical operator `word` (with or without its dash, any case)."""
    kind, text = token
    return kind == "word" and text.lower().removeprefix("-") == word


def _operand(tokens: Tokens, at: int, device: Mapping[str, str | None]) -> tuple[int, bool]:
    if at >= len(tokens):
        raise UnevaluableFilter("the rule ends too early")
    kind, text = tokens[at]
    if kind == "open":
        at, result = _or(tokens, at + 1, device)
        if at >= len(tokens) or tokens[at][0] != "close":
            raise UnevaluableFilter("a parenthesis is not closed")
        return at + 1, result
    if kind != "word" or at + 2 >= len(tokens):
        raise UnevaluableFilter(f"expected a comparison at {text!r}")
    return at + 3, _comparison(text, tokens[at + 1], tokens[at + 2], device)


def _comparison(
    subject: str, operator: tuple[str, str], operand: tuple[str, str], device: Mapping[str, str | None]
) -> bool:
    entity, _, name = subject.partition(".")
    if entity.lower() != "device" or not name:
        raise UnevaluableFilter(f"{subject!r} is not a device property")
    if name.lower() not in device:
        raise UnevaluableFilter(f"the property {name} is not one this app reads of the device")
    value = device[name.lower()]
    value = value.lower() if value is not None else None
    if operator[0] != "word":
        raise UnevaluableFilter(f"expected an operator after {subject!r}")
    op = operator[1].lower().removeprefix("-")
    kind, text = operand
    if name.lower() in VERSION_PROPERTIES:
        return _version_comparison(name, value, op, operand)
    if op in _LIST_OPERATORS:
        if kind != "list":
            raise UnevaluableFilter(f"-{op} needs a list of values, not {text!r}")
        values = [item.strip().strip('"').lower() for item in text[1:-1].split(",") if item.strip()]
        return (value in values) is _LIST_OPERATORS[op]
    if op not in _STRING_OPERATORS:
        raise UnevaluableFilter(f"the operator {operator[1]} is not one this app evaluates")
    if kind == "word" and text.lower() in _NULLS and op in {"eq", "ne"}:
        return (value is None) is (op == "eq")
    if kind != "string":
        raise UnevaluableFilter(f"expected a quoted value after {operator[1]}, not {text!r}")
    return _STRING_OPERATORS[op](value, text.lower())


def _version_comparison(name: str, value: str | None, op: str, operand: tuple[str, str]) -> bool:
    if op not in _VERSION_OPERATORS:
        raise UnevaluableFilter(f"{name} is a version: -{op} is not one of its operators")
    kind, text = operand
    if kind not in {"word", "string"}:
        raise UnevaluableFilter(f"expected a version after -{op}, not {text!r}")
    if value is None:
        raise UnevaluableFilter(f"the device's Intune record has no {name}")
    return _VERSION_OPERATORS[op](_version(value), _version(text))


def _version(text: str) -> tuple[int, ...]:
    """A dotted version as numbers, short ones padded with zeros (10.0.22000 is 10.0.22000.0)."""
    parts = text.strip().split(".")
    if not all(part.isdigit() for part in parts):
        raise UnevaluableFilter(f"{text!r} is not a version")
    numbers = tuple(int(part) for part in parts)
    return numbers + (0,) * (4 - len(numbers))


def profile_kind(policy: Policy) -> tuple[str, str] | None:
    """What a configuration profile does that a VM can't honour, and the settings that say so."""
    if policy.category != CONFIGURATION:
        return None
    odata_type = policy.odata_type.lower()
    if odata_type in _PROFILE_TYPES:
        return _PROFILE_TYPES[odata_type], f"profile type {policy.odata_type.removeprefix('#microsoft.graph.')}"
    if odata_type in {ENDPOINT_PROTECTION, INTENT}:
        configured = [name for name in BITLOCKER_SETTINGS if _configured(policy.settings.get(name))]
        if configured and odata_type == INTENT:
            return "bitlocker", f"Endpoint security profile (Windows 10 and later, deprecated): {', '.join(configured)}"
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
