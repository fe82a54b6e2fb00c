"""The responder's only Microsoft Graph **beta** reads, for the device-side check (read-only).

Graph v1.0 doesn't describe what these return: profile types v1.0 lacks (Domain Join, Wi-Fi,
DFCI) in `deviceConfigurations`, `configurationPolicies`, where settings catalog and
Endpoint security policies (disk encryption among them) live, `intents`, where Endpoint security profiles of
the deprecated *Windows 10 and later* platform and security baselines live, the tenant's assignment filters
(`assignmentFilters`), and the filter an assignment carries (v1.0's `deviceAndAppManagementAssignmentTarget`
declares none, beta's declares `deviceAndAppManagementAssignmentFilterId`/`…Type`): so every assignment
is read from beta, template profiles' and compliance policies' too. Each call, `$select` and
`$expand` here is checked against Microsoft's beta metadata (`tests/contracts/graph/beta-*.xml`),
and each is allowed by `DeviceManagementConfiguration.Read.All` (the permission index).

The requests are sent by `responder.adapters.graph.GraphDeviceDirectory` (same client,
same error handling); this module only says what to ask and how to read the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation

from responder.decisions.graph_documents import policy_from_json
from responder.decisions.intune_policies import (
    BETA_ONLY_PROFILE_TYPES,
    CONFIGURATION,
    AssignmentFilter,
    AssignmentTarget,
    Policy,
    configuration_policy_from_json,
    filter_from_json,
    intent_from_json,
    target_from_json,
)

CONFIGURATIONS = "/deviceManagement/deviceConfigurations"
CONFIGURATION_POLICIES = "/deviceManagement/configurationPolicies"
COMPLIANCE_POLICIES = "/deviceManagement/deviceCompliancePolicies"
ASSIGNMENT_FILTERS = "/deviceManagement/assignmentFilters"
INTENTS = "/deviceManagement/intents"
# What the rules read of a configuration policy (deviceManagementConfigurationPolicy, beta) and of its
# settings (deviceManagementConfigurationSetting): nothing else is fetched.
CONFIGURATION_POLICY_FIELDS = ["id", "name", "platforms", "technologies", "templateReference"]
SETTING_FIELDS = ["id", "settingInstance"]
# What the filter evaluation reads of an assignment filter (deviceAndAppManagementAssignmentFilter, beta).
ASSIGNMENT_FILTER_FIELDS = ["id", "displayName", "platform", "rule"]
# What the rules read of a legacy Endpoint security profile (deviceManagementIntent), its assignments
# (deviceManagementIntentAssignment) and its settings (deviceManagementSettingInstance).
INTENT_FIELDS = ["id", "displayName", "isAssigned"]
INTENT_ASSIGNMENT_FIELDS = ["id", "target"]
INTENT_SETTING_FIELDS = ["id", "definitionId", "valueJson"]
# Only targets that can reach a device make a policy worth reading settings of.
_DEVICE_TARGETS = {"all-devices", "group"}

Request = Callable[[Method, str, Mapping[str, str | Sequence[str]] | None], RequestInformation]
Pages = Callable[[RequestInformation], AsyncIterator[dict[str, Any]]]


Targets = dict[str, tuple[AssignmentTarget, ...]]  # policy id → its assignments' targets, as beta serves them


@dataclass(frozen=True, slots=True)
class BetaProfiles:
    """One read of beta `deviceConfigurations`: the profiles of the types v1.0 lacks, and every profile's
    targets (with their filters) by id, for the profiles read from v1.0."""

    beta_only: list[Policy]
    targets: Targets


class GraphBeta:
    """The beta reads, built on the directory's own request factory (already pointed at `/beta`)."""

    def __init__(self, request: Request, pages: Pages) -> None:
        self._request = request
        self._pages = pages

    async def profiles(self) -> BetaProfiles:
        """Template profiles of the types v1.0 doesn't describe (kept by their `@odata.type`), with assignments,
        and the targets of every profile (the same list call)."""
        found, targets = [], {}
        async for item in self._pages(self._request(Method.GET, CONFIGURATIONS, {"$expand": "assignments"})):
            policy = policy_from_json(item, CONFIGURATION)
            targets[policy.id] = policy.targets
            if str(item.get("@odata.type", "")).lower() in BETA_ONLY_PROFILE_TYPES:
                found.append(policy)
        return BetaProfiles(found, targets)

    async def compliance_targets(self) -> Targets:
        """The targets of every compliance policy (only their ids and assignments are read)."""
        query = {"$select": ["id"], "$expand": "assignments"}
        return {
            str(item.get("id")): _targets(item.get("assignments"))
            async for item in self._pages(self._request(Method.GET, COMPLIANCE_POLICIES, query))
        }

    async def assignment_filters(self) -> dict[str, AssignmentFilter]:
        """The tenant's assignment filters, by id (lower case): their name, platform and rule."""
        read = self._request(Method.GET, ASSIGNMENT_FILTERS, {"$select": ASSIGNMENT_FILTER_FIELDS})
        filters = [filter_from_json(item) async for item in self._pages(read)]
        return {found.id: found for found in filters}

    async def configuration_policies(self) -> list[Policy]:
        """Windows MDM settings catalog and Endpoint security policies that are assigned to devices, each with
        the settings the rules classify. One list call, then one settings read per such policy."""
        query = {"$select": CONFIGURATION_POLICY_FIELDS, "$expand": "assignments"}
        found = []
        async for item in self._pages(self._request(Method.GET, CONFIGURATION_POLICIES, query)):
            if not _windows_mdm(item) or not _reaches_devices(item):
                continue
            settings_path = f"{CONFIGURATION_POLICIES}/{quote(str(item.get('id')), safe='')}/settings"
            read = self._request(Method.GET, settings_path, {"$select": SETTING_FIELDS})
            settings = [setting async for setting in self._pages(read)]
            found.append(configuration_policy_from_json(item, settings))
        return found

    async def intents(self) -> list[Policy]:
        """Endpoint security profiles of the deprecated *Windows 10 and later* platform and security baselines
        that are assigned to devices, with their BitLocker settings: Microsoft says existing ones can still be
        used, and no other API serves them. One list call, then an assignments read per assigned profile and a
        settings read per one that reaches devices."""
        found = []
        async for item in self._pages(self._request(Method.GET, INTENTS, {"$select": INTENT_FIELDS})):
            if item.get("isAssigned") is False:
                continue
            path = f"{INTENTS}/{quote(str(item.get('id')), safe='')}"
            read = self._request(Method.GET, f"{path}/assignments", {"$select": INTENT_ASSIGNMENT_FIELDS})
            assignments = [assignment async for assignment in self._pages(read)]
            if not any(target.kind in _DEVICE_TARGETS for target in _targets(assignments)):
                continue
            read = self._request(Method.GET, f"{path}/settings", {"$select": INTENT_SETTING_FIELDS})
            found.append(intent_from_json(item, assignments, [setting async for setting in self._pages(read)]))
        return found


def _windows_mdm(document: Mapping[str, Any]) -> bool:
    """`platforms` and `technologies` are flag enums, served as comma-separated names (`windows10`, `mdm`)."""
    platforms = {part.strip().lower() for part in str(document.get("platforms") or "").split(",")}
    technologies = {part.strip().lower() for part in str(document.get("technologies") or "").split(",")}
    return "windows10" in platforms and "mdm" in technologies


def _reaches_devices(document: Mapping[str, Any]) -> bool:
    return any(target.kind in _DEVICE_TARGETS for target in _targets(document.get("assignments")))


def _targets(assignments: Iterable[Any] | None) -> tuple[AssignmentTarget, ...]:
    return tuple(
        target_from_json(assignment["target"])
        for assignment in assignments or []
        if isinstance(assignment, Mapping) and isinstance(assignment.get("target"), Mapping)
    )
