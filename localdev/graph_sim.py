"""A local Microsoft Graph v1.0: the subset the responder uses, in Graph's JSON shapes.

Intune `deviceManagement/managedDevices` (list with `$filter`/`$select`/paging,
get, delete, `syncDevice`), Entra `devices` (list with `$filter` incl.
`physicalIds/any(...)`, get, patch `extensionAttributes`, delete, and
`transitiveMemberOf`), group membership (`members`, `members/$ref` add and
remove), and Intune's `deviceConfigurations` and `deviceCompliancePolicies` with
`$expand=assignments` (v1.0 serves the types v1.0 describes; `/beta` serves all), and, in beta
only, `configurationPolicies` (settings catalog and Endpoint security) with `$select`,
`$expand=assignments` and their `settings`, shaped as the beta metadata says
(`deviceManagementConfigurationPolicy`, `deviceManagementConfigurationSetting`), and `assignmentFilters`
(`deviceAndAppManagementAssignmentFilter`) with `$select`. An assignment's target carries its filter
(`deviceAndAppManagementAssignmentFilterId`/`…Type`) in beta only: v1.0's target type declares neither.
Errors are Graph's:
404 `Request_ResourceNotFound`, 400 for a member that is already there.
Destructive device actions (wipe, retire, ...) are deliberately absent: the
responder must never call them, and a call would get a 404 here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from localdev.sim_http import Request, Response, error
from responder.decisions.clouds import PUBLIC, Cloud

DEFAULT_PAGE_SIZE = 100
# Profile types only Graph beta describes: the v1.0 list leaves them out (tests check against the v1.0 metadata).
BETA_ONLY_TYPES = frozenset(
    {
        "#microsoft.graph.windows10devicefirmwareconfigurationinterface",
        "#microsoft.graph.windowsdomainjoinconfiguration",
        "#microsoft.graph.windowswificonfiguration",
        "#microsoft.graph.windowswifienterpriseeapconfiguration",
    }
)
_MANAGED = r"/v1\.0/deviceManagement/managedDevices"
# v1.0's deviceEnrollmentType members. An enrolment v1.0 can't name (beta's azureAdJoinUsingAzureVmExtension,
# the Azure VM extension's join) is served as the evolvable enum's sentinel, as Graph does.
V1_ENROLLMENT_TYPES = frozenset(
    {
        "unknown",
        "userEnrollment",
        "deviceEnrollmentManager",
        "appleBulkWithUser",
        "appleBulkWithoutUser",
        "windowsAzureADJoin",
        "windowsBulkUserless",
        "windowsAutoEnrollment",
        "windowsBulkAzureDomainJoin",
        "windowsCoManagement",
        "windowsAzureADJoinUsingDeviceAuth",
        "appleUserEnrollment",
        "appleUserEnrollmentWithServiceAccount",
        "unknownFutureValue",
    }
)
# beta's deviceAndAppManagementAssignmentTarget: the filter id (nullable) and type (none | include | exclude).
FILTER_ID, FILTER_TYPE = "deviceAndAppManagementAssignmentFilterId", "deviceAndAppManagementAssignmentFilterType"

Json = dict[str, Any]


@dataclass
class GraphTenant:
    """The directory and Intune state the simulator serves and the tests inspect."""

    managed_devices: dict[str, Json] = field(default_factory=dict)  # by id
    devices: dict[str, Json] = field(default_factory=dict)  # Entra devices, by object id
    groups: dict[str, Json] = field(default_factory=dict)  # by id; "members": [object ids]
    synced: list[str] = field(default_factory=list)  # managed device ids, in call order
    # Intune policies, by id, each with its "assignments" (served only with $expand=assignments).
    configurations: dict[str, Json] = field(default_factory=dict)
    compliance_policies: dict[str, Json] = field(default_factory=dict)
    # Settings catalog and Endpoint security policies (beta), each with "assignments" and "settings".
    configuration_policies: dict[str, Json] = field(default_factory=dict)
    # Assignment filters (beta deviceAndAppManagementAssignmentFilter), by id.
    assignment_filters: dict[str, Json] = field(default_factory=dict)
    # A large estate (the storm bench): single-clause lookups (`deviceId eq`, `deviceName eq`, a `physicalIds`
    # lambda) served from an index instead of a scan of every record. Only for a tenant changed through the
    # simulator's own routes: the index is rebuilt when a collection's size changes, not on an edit in place.
    indexed_lookups: bool = False
    _indexes: dict[str, tuple[int, dict[tuple[str, str], list[Json]]]] = field(default_factory=dict)
    # Legacy Endpoint security profiles and security baselines (beta deviceManagementIntent), each with its
    # "assignments" and "settings" (deviceManagementSettingInstance), served only at their own paths.
    intents: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def from_seed(cls, seed: Json) -> GraphTenant:
        tenant = cls()
        for group in seed.get("groups", []):
            tenant.groups[group["id"]] = {"members": [], **copy.deepcopy(group)}
        tenant.enrol(seed)
        tenant.add_policies(seed)
        return tenant

    def candidates(self, name: str, records: dict[str, Json], expression: str | None) -> list[Json]:
        """The records a `$filter` can match: all of them, or (indexed) those its one clause names."""
        key = _indexed_clause(expression) if self.indexed_lookups else None
        if key is None:
            return list(records.values())
        size, index = self._indexes.get(name, (-1, {}))
        if size != len(records):
            index = {}
            for record in records.values():
                for prop in ("deviceId", "deviceName", "displayName"):
                    if isinstance(record.get(prop), str):
                        index.setdefault((prop, record[prop].lower()), []).append(record)
                for value in record.get("physicalIds") or []:
                    index.setdefault(("physicalIds", str(value)), []).append(record)
            self._indexes[name] = (len(records), index)
        return list(index.get(key, []))

    def add_policies(self, seed: Json) -> None:
        for policy in seed.get("deviceConfigurations", []):
            self.configurations[policy["id"]] = {"assignments": [], **copy.deepcopy(policy)}
        for policy in seed.get("deviceCompliancePolicies", []):
            self.compliance_policies[policy["id"]] = {"assignments": [], **copy.deepcopy(policy)}
        for policy in seed.get("configurationPolicies", []):
            self.configuration_policies[policy["id"]] = {"assignments": [], "settings": [], **copy.deepcopy(policy)}
        for assignment_filter in seed.get("assignmentFilters", []):
            self.assignment_filters[assignment_filter["id"]] = copy.deepcopy(assignment_filter)
        for intent in seed.get("intents", []):
            self.intents[intent["id"]] = {"assignments": [], "settings": [], **copy.deepcopy(intent)}

    def enrol(self, seed: Json) -> None:
        """Intune and Entra records, and group members: the seed's, or ones that appear later
        (a VM's device enrols minutes after the VM is created)."""
        for device in seed.get("managedDevices", []):
            self.managed_devices[device["id"]] = copy.deepcopy(device)
        for device in seed.get("devices", []):
            entry = copy.deepcopy(device)
            entry.setdefault("extensionAttributes", {f"extensionAttribute{n}": None for n in range(1, 16)})
            entry.setdefault("physicalIds", [])
            self.devices[device["id"]] = entry
        for membership in seed.get("groupMembers", []):
            self.groups[membership["group"]]["members"].append(membership["member"])

    def groups_of(self, member: str) -> list[str]:
        """The groups `member` is in, directly or through groups that are members of groups."""
        found: list[str] = []
        frontier = [member]
        while frontier:
            current = frontier.pop()
            for group_id, group in self.groups.items():
                if current in group["members"] and group_id not in found:
                    found.append(group_id)
                    frontier.append(group_id)
        return found

    def members_of(self, group_id: str) -> list[str]:
        return list(self.groups[group_id]["members"])

    def owner_of(self, record: Json) -> Owner:
        """Ground truth a test seeded (`_owner`): whose machine the record really is. Never served."""
        return owner_from_seed(record.get("_owner"))


@dataclass(frozen=True, slots=True)
class Owner:
    """The machine a seeded record belongs to: a VM incarnation, or a physical PC (`physical`)."""

    resource_id: str | None = None  # lower case
    vm_id: str | None = None
    physical: bool = False

    @property
    def unknown(self) -> bool:
        return self.resource_id is None and not self.physical


def owner_from_seed(value: Any) -> Owner:
    """`"physical"`, `{"resourceId": ..., "vmId": ...}`, or absent (unknown)."""
    if value == "physical":
        return Owner(physical=True)
    if isinstance(value, dict) and isinstance(value.get("resourceId"), str):
        vm_id = value.get("vmId")
        return Owner(str(value["resourceId"]).lower(), str(vm_id) if vm_id else None)
    return Owner()


class GraphSimulator:
    """Routes Graph requests to a `GraphTenant`."""

    def __init__(self, tenant: GraphTenant, page_size: int = DEFAULT_PAGE_SIZE, cloud: Cloud = PUBLIC) -> None:
        self.tenant = tenant
        self.directory_root = cloud.directory_object_root  # what @odata.id references must start with
        # Properties whose $filter clauses are dropped silently, as Graph may do for a property it
        # does not document as filterable: the client must not rely on them.
        self.ignored_filter_properties: frozenset[str] = frozenset()
        self.page_size = page_size
        self.base_url = ""  # set once the server has a port, for @odata.nextLink
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = [
            ("GET", re.compile(r"/v1\.0/deviceManagement/managedDevices"), self._list_managed_devices),
            ("GET", re.compile(r"/v1\.0/deviceManagement/managedDevices/(?P<id>[^/]+)"), self._get_managed),
            ("DELETE", re.compile(_MANAGED + r"/(?P<id>[^/]+)"), self._delete_managed),
            (
                "POST",
                re.compile(r"/v1\.0/deviceManagement/managedDevices/(?P<id>[^/]+)/syncDevice"),
                self._sync,
            ),
            ("GET", re.compile(r"/v1\.0/devices"), self._list_devices),
            ("GET", re.compile(r"/v1\.0/devices/(?P<id>[^/]+)"), self._get_device),
            ("GET", re.compile(r"/v1\.0/devices/(?P<id>[^/]+)/transitiveMemberOf"), self._transitive_member_of),
            (
                "GET",
                re.compile(r"/(?P<version>v1\.0|beta)/deviceManagement/deviceConfigurations"),
                self._list_configurations,
            ),
            (
                "GET",
                re.compile(r"/(?P<version>v1\.0|beta)/deviceManagement/deviceCompliancePolicies"),
                self._list_compliance_policies,
            ),
            ("GET", re.compile(r"/beta/deviceManagement/assignmentFilters"), self._list_assignment_filters),
            ("GET", re.compile(r"/beta/deviceManagement/configurationPolicies"), self._list_configuration_policies),
            (
                "GET",
                re.compile(r"/beta/deviceManagement/configurationPolicies/(?P<id>[^/]+)/settings"),
                self._list_policy_settings,
            ),
            ("GET", re.compile(r"/beta/deviceManagement/intents"), self._list_intents),
            (
                "GET",
                re.compile(r"/beta/deviceManagement/intents/(?P<id>[^/]+)/(?P<part>assignments|settings)"),
                self._list_intent_part,
            ),
            ("PATCH", re.compile(r"/v1\.0/devices/(?P<id>[^/]+)"), self._patch_device),
            ("DELETE", re.compile(r"/v1\.0/devices/(?P<id>[^/]+)"), self._delete_device),
            ("GET", re.compile(r"/v1\.0/groups/(?P<group>[^/]+)/members"), self._list_members),
            ("POST", re.compile(r"/v1\.0/groups/(?P<group>[^/]+)/members/\$ref"), self._add_member),
            (
                "DELETE",
                re.compile(r"/v1\.0/groups/(?P<group>[^/]+)/members/(?P<member>[^/]+)/\$ref"),
                self._remove_member,
            ),
        ]

    def __call__(self, request: Request) -> Response:
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path.rstrip("/"))
            if match and method == request.method:
                return handler(request, **match.groupdict())
        return _not_found(f"no resource for {request.method} {request.path}")

    # --- Intune managed devices -------------------------------------------------

    def _list_managed_devices(self, request: Request) -> Response:
        found = self.tenant.candidates("managedDevices", self.tenant.managed_devices, request.query.get("$filter"))
        return self._page(request, [_as_v1(device) for device in found], "deviceManagement/managedDevices")

    def _get_managed(self, request: Request, id: str) -> Response:
        device = self.tenant.managed_devices.get(id)
        if device is None:
            return _not_found(f"managedDevice {id} not found")
        return Response(HTTPStatus.OK, _select(_as_v1(device), request.query.get("$select")))

    def _delete_managed(self, request: Request, id: str) -> Response:
        if self.tenant.managed_devices.pop(id, None) is None:
            return _not_found(f"managedDevice {id} not found")
        return Response(HTTPStatus.NO_CONTENT)

    def _sync(self, request: Request, id: str) -> Response:
        if id not in self.tenant.managed_devices:
            return _not_found(f"managedDevice {id} not found")
        self.tenant.synced.append(id)
        return Response(HTTPStatus.NO_CONTENT)

    # --- Entra devices ----------------------------------------------------------

    def _list_devices(self, request: Request) -> Response:
        # A lambda over a collection (`physicalIds/any(...)`) is an advanced query: Graph refuses it without
        # `ConsistencyLevel: eventual` and `$count=true` (Microsoft Graph, "Advanced query capabilities").
        if "/any(" in request.query.get("$filter", "") and (
            request.headers.get("consistencylevel", "").lower() != "eventual" or request.query.get("$count") != "true"
        ):
            return error(
                HTTPStatus.BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Unsupported or invalid query filter clause specified for property 'physicalIds' of resource 'Device'.",
            )
        found = self.tenant.candidates("devices", self.tenant.devices, request.query.get("$filter"))
        return self._page(request, found, "devices")

    def _get_device(self, request: Request, id: str) -> Response:
        device = self.tenant.devices.get(id)
        if device is None:
            return _not_found(f"device {id} not found")
        return Response(HTTPStatus.OK, _select(device, request.query.get("$select")))

    def _patch_device(self, request: Request, id: str) -> Response:
        device = self.tenant.devices.get(id)
        if device is None:
            return _not_found(f"device {id} not found")
        body = {name: value for name, value in (request.body or {}).items() if not name.startswith("@odata.")}
        unknown = set(body) - {"extensionAttributes"}
        if unknown:
            return error(HTTPStatus.BAD_REQUEST, "Request_BadRequest", f"cannot patch {sorted(unknown)} here")
        # extensionAttributes of a device are mastered in Entra for synced (hybrid) devices too
        # (Graph v1.0, onPremisesExtensionAttributes resource type).
        for name, value in body.get("extensionAttributes", {}).items():
            if not re.fullmatch(r"extensionAttribute([1-9]|1[0-5])", name):
                return error(HTTPStatus.BAD_REQUEST, "Request_BadRequest", f"no property {name}")
            device["extensionAttributes"][name] = value
        return Response(HTTPStatus.NO_CONTENT)

    def _delete_device(self, request: Request, id: str) -> Response:
        if self.tenant.devices.pop(id, None) is None:
            return _not_found(f"device {id} not found")
        for group in self.tenant.groups.values():
            if id in group["members"]:
                group["members"].remove(id)
        return Response(HTTPStatus.NO_CONTENT)

    def _transitive_member_of(self, request: Request, id: str) -> Response:
        if id not in self.tenant.devices:
            return _not_found(f"device {id} not found")
        groups = [
            {"@odata.type": "#microsoft.graph.group", **_select(self.tenant.groups[group], None)}
            for group in self.tenant.groups_of(id)
        ]
        for group in groups:
            group.pop("members", None)
        return self._page(request, groups, f"devices/{id}/transitiveMemberOf")

    # --- Intune policies ---------------------------------------------------------

    def _list_configurations(self, request: Request, version: str) -> Response:
        served = [
            policy
            for policy in self.tenant.configurations.values()
            if version == "beta" or str(policy.get("@odata.type", "")).lower() not in BETA_ONLY_TYPES
        ]
        return self._policies(request, served, "deviceManagement/deviceConfigurations", version)

    def _list_compliance_policies(self, request: Request, version: str) -> Response:
        policies = list(self.tenant.compliance_policies.values())
        return self._policies(request, policies, "deviceManagement/deviceCompliancePolicies", version)

    def _list_assignment_filters(self, request: Request) -> Response:
        filters = list(self.tenant.assignment_filters.values())
        return self._page(request, filters, "deviceManagement/assignmentFilters", "beta")

    def _list_configuration_policies(self, request: Request) -> Response:
        policies = list(self.tenant.configuration_policies.values())
        return self._policies(request, policies, "deviceManagement/configurationPolicies", "beta", {"settings"})

    def _list_policy_settings(self, request: Request, id: str) -> Response:
        policy = self.tenant.configuration_policies.get(id)
        if policy is None:
            return _not_found(f"deviceManagementConfigurationPolicy {id} not found")
        settings = list(policy["settings"])
        return self._page(request, settings, f"deviceManagement/configurationPolicies/{id}/settings", "beta")

    def _list_intents(self, request: Request) -> Response:
        """Intents without their navigation properties (`isAssigned` says whether any assignment exists)."""
        intents = [
            {"isAssigned": bool(intent["assignments"]), **_without(intent, {"assignments", "settings"})}
            for intent in self.tenant.intents.values()
        ]
        return self._page(request, intents, "deviceManagement/intents", "beta")

    def _list_intent_part(self, request: Request, id: str, part: str) -> Response:
        intent = self.tenant.intents.get(id)
        if intent is None:
            return _not_found(f"deviceManagementIntent {id} not found")
        items = _assignments(intent[part], "beta") if part == "assignments" else list(intent[part])
        return self._page(request, items, f"deviceManagement/intents/{id}/{part}", "beta")

    def _policies(
        self,
        request: Request,
        policies: list[Json],
        path: str,
        version: str,
        also: frozenset[str] | set[str] = frozenset(),
    ) -> Response:
        """Policies with their navigation properties (`assignments`, and `also`) served only when expanded."""
        navigation = {"assignments", *also}
        expand = {part.strip() for part in request.query.get("$expand", "").split(",") if part.strip()}
        if expand - navigation:
            return error(HTTPStatus.BAD_REQUEST, "BadRequest", f"cannot expand {sorted(expand - navigation)}")
        shown = [
            {
                name: _assignments(value, version) if name == "assignments" else value
                for name, value in policy.items()
                if name not in navigation or name in expand
            }
            for policy in policies
        ]
        return self._page(request, shown, path, version, keep=expand)

    # --- groups -----------------------------------------------------------------

    def _list_members(self, request: Request, group: str) -> Response:
        if group not in self.tenant.groups:
            return _not_found(f"group {group} not found")
        members = [
            {"@odata.type": "#microsoft.graph.device", **_select(self.tenant.devices[member], None)}
            for member in self.tenant.groups[group]["members"]
            if member in self.tenant.devices
        ]
        return self._page(request, members, f"groups/{group}/members")

    def _add_member(self, request: Request, group: str) -> Response:
        if group not in self.tenant.groups:
            return _not_found(f"group {group} not found")
        reference = str((request.body or {}).get("@odata.id", ""))
        member = reference.rsplit("/", 1)[-1]
        if not reference.startswith(self.directory_root) or member not in self.tenant.devices:
            return error(HTTPStatus.BAD_REQUEST, "Request_BadRequest", f"invalid reference {reference!r}")
        members = self.tenant.groups[group]["members"]
        if member in members:
            return error(
                HTTPStatus.BAD_REQUEST,
                "Request_BadRequest",
                "One or more added object references already exist for the following modified properties: 'members'.",
            )
        members.append(member)
        return Response(HTTPStatus.NO_CONTENT)

    def _remove_member(self, request: Request, group: str, member: str) -> Response:
        if group not in self.tenant.groups or member not in self.tenant.groups[group]["members"]:
            return _not_found(f"{member} is not a member of {group}")
        self.tenant.groups[group]["members"].remove(member)
        return Response(HTTPStatus.NO_CONTENT)

    # --- OData ------------------------------------------------------------------

    def _page(
        self, request: Request, items: list[Json], path: str, version: str = "v1.0", keep: set[str] | None = None
    ) -> Response:
        query = dict(request.query)
        matches_filter = odata_filter(query.get("$filter"), self.ignored_filter_properties)  # parsed once
        matches = [item for item in items if matches_filter(item)]
        start = int(query.pop("$skiptoken", "0") or 0)
        size = min(int(query.get("$top", self.page_size)), self.page_size)
        page = matches[start : start + size]
        body: Json = {"value": [_select(item, query.get("$select"), keep) for item in page]}
        if start + size < len(matches):
            query["$skiptoken"] = str(start + size)
            body["@odata.nextLink"] = f"{self.base_url}/{version}/{path}?{urlencode(query)}"
        if query.get("$count") == "true":
            body["@odata.count"] = len(matches)
        return Response(HTTPStatus.OK, body)


def _without(item: Json, names: set[str]) -> Json:
    return {name: value for name, value in item.items() if name not in names}


def _as_v1(device: Json) -> Json:
    """A managed device as v1.0 serves it: an enrolment type v1.0's enum lacks is `unknownFutureValue`."""
    if device.get("deviceEnrollmentType", "unknown") in V1_ENROLLMENT_TYPES:
        return device
    return {**device, "deviceEnrollmentType": "unknownFutureValue"}


def _assignments(assignments: list[Json], version: str) -> list[Json]:
    """Assignments as the version serves them: in beta each target carries its filter (none when it has
    none: the type is not nullable), in v1.0 neither property (v1.0's target type declares no filter)."""
    served = []
    for assignment in assignments:
        target = {name: value for name, value in assignment["target"].items() if name not in {FILTER_ID, FILTER_TYPE}}
        if version == "beta":
            target[FILTER_ID] = assignment["target"].get(FILTER_ID)
            target[FILTER_TYPE] = assignment["target"].get(FILTER_TYPE) or "none"
        served.append({**assignment, "target": target})
    return served


def _not_found(message: str) -> Response:
    return error(HTTPStatus.NOT_FOUND, "Request_ResourceNotFound", message)


def _select(item: Json, select: str | None, expanded: set[str] | None = None) -> Json:
    """The item as Graph serves it: `$select`ed (expanded navigation properties kept, as OData does),
    and never the test's ground truth (`_owner`)."""
    served = {name: value for name, value in item.items() if not name.startswith("_")}
    if not select:
        return copy.deepcopy(served)
    wanted = {name.strip() for name in select.split(",")} | {"id", "@odata.type"} | (expanded or set())
    return {name: copy.deepcopy(value) for name, value in served.items() if name in wanted}


_ANY = re.compile(r"^(?P<prop>\w+)/any\(\s*(?P<var>\w+)\s*:\s*(?P=var)\s+eq\s+'(?P<value>(?:[^']|'')*)'\s*\)$")
_EQ = re.compile(r"^(?P<prop>[\w/]+)\s+eq\s+(?:'(?P<text>(?:[^']|'')*)'|(?P<literal>true|false|null))$")
_AND = re.compile(r"\s+and\s+(?=(?:[^']*'[^']*')*[^']*$)")


def odata_filter(expression: str | None, ignored: frozenset[str] = frozenset()) -> Callable[[Json], bool]:
    """The `$filter` subset the responder uses: `eq` on strings (case-insensitive,
    as Graph compares them), booleans and null, `any()` over a string collection (exact),
    joined by `and`. Anything else raises ValueError (served as 400, like Graph)."""
    if not expression:
        return lambda item: True
    clauses = [part.strip() for part in _AND.split(expression.strip())]
    tests = [_clause(clause) for clause in clauses if clause.split("/")[0].split(" ")[0] not in ignored]
    return lambda item: all(test(item) for test in tests)


def _indexed_clause(expression: str | None) -> tuple[str, str] | None:
    """The index key of a one-clause filter on an indexed property (the full filter still decides)."""
    clause = (expression or "").strip()
    if not clause or _AND.search(clause):
        return None
    if (match := _ANY.match(clause)) and match["prop"] == "physicalIds":
        return "physicalIds", match["value"].replace("''", "'")
    if (match := _EQ.match(clause)) and match["prop"] in {"deviceId", "deviceName", "displayName"} and match["text"]:
        return match["prop"], match["text"].replace("''", "'").lower()
    return None


def _clause(clause: str) -> Callable[[Json], bool]:
    if match := _ANY.match(clause):
        # A collection's values are compared as stored: the conservative reading (Entra keeps
        # `physicalIds` in ARM's casing, `[AzureResourceId]:/subscriptions/../resourceGroups/..`).
        prop, wanted = match["prop"], match["value"].replace("''", "'")
        return lambda item: any(str(value) == wanted for value in item.get(prop) or [])
    if match := _EQ.match(clause):
        path = match["prop"].split("/")
        if match["literal"] is not None:
            literal = {"true": True, "false": False, "null": None}[match["literal"]]
            return lambda item: _lookup(item, path) == literal
        text = match["text"].replace("''", "'").lower()
        return lambda item: str(_lookup(item, path) or "").lower() == text and _lookup(item, path) is not None
    raise ValueError(f"Invalid filter clause: {clause!r} is not supported by the local simulator")


def _lookup(item: Json, path: list[str]) -> Any:
    value: Any = item
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value
