"""Assignment filters read through the real Graph adapter from the local Graph (issue 28, item 3).

The tenant's filters come from beta `deviceManagement/assignmentFilters`; every assignment's target comes
from beta, where `deviceAndAppManagementAssignmentTarget` carries the filter (v1.0's declares none): template
profiles and compliance policies read from v1.0 get their beta targets by id. Whether a policy reaches the
VM's device is then decided by the product's own `assigned_to_device`, with the properties the device
check passes (the managed device as the adapter reads it).
"""

from __future__ import annotations

import copy
from typing import Any

from localdev.simulators import Simulators
from responder.decisions.intune_policies import AssignedPolicy, Policy, assigned_to_device, filter_properties
from responder.ports import Services

WIN11_MANAGED = "7d1e0001-aaaa-4bbb-8ccc-000000000001"  # vm-win11-01's device: model "Virtual Machine"
SAMPLE_FILTER = "f17e0001-0000-4000-8000-000000000001"  # the sample's "Physical devices only" (include)
SAMPLE_DFCI = "c0f10004-0000-4000-8000-000000000004"  # the sample's DFCI profile, for physical devices only
BITLOCKER = "c0f10001-0000-4000-8000-000000000001"  # a v1.0 template profile (endpoint protection)
SECURE_BOOT = "c0c00001-0000-4000-8000-000000000001"  # a v1.0 compliance policy
CATALOG = "c5c50001-0000-4000-8000-000000000001"  # a settings catalog policy (beta)
VMS_ONLY = "f17e0002-0000-4000-8000-000000000002"
FILTERS = "/beta/deviceManagement/assignmentFilters"


def add_filter(simulators: Simulators, filter_id: str, rule: str, name: str = "Virtual machines") -> None:
    simulators.tenant.assignment_filters[filter_id] = {
        "id": filter_id,
        "displayName": name,
        "platform": "windows10AndLater",
        "rule": rule,
    }


def all_devices(filter_id: str | None = None, filter_type: str = "none") -> list[dict[str, Any]]:
    target: dict[str, Any] = {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}
    if filter_id:
        target |= {
            "deviceAndAppManagementAssignmentFilterId": filter_id,
            "deviceAndAppManagementAssignmentFilterType": filter_type,
        }
    return [{"id": "a", "target": target}]


def dfci_profile(simulators: Simulators, policy_id: str, assignments: list[dict[str, Any]]) -> None:
    profile = copy.deepcopy(simulators.tenant.configurations[SAMPLE_DFCI])
    simulators.tenant.configurations[policy_id] = {**profile, "id": policy_id, "assignments": assignments}


async def reaching_the_vm(services: Services) -> dict[str, AssignedPolicy]:
    """The policies that reach vm-win11-01's device (no groups: only all-devices assignments count)."""
    managed = await services.directory.get_managed_device(WIN11_MANAGED)
    assert managed is not None
    assert managed.model == "Virtual Machine"
    properties = filter_properties(managed, None)
    policies = await services.directory.intune_policies()
    return {assigned.policy.id: assigned for assigned in assigned_to_device(policies, frozenset(), properties)}


async def test_a_profile_whose_filter_keeps_vms_away_doesnt_reach_the_vm_and_one_that_includes_vms_does(
    services: Services, simulators: Simulators
) -> None:
    add_filter(simulators, VMS_ONLY, '(device.model -eq "Virtual Machine")')
    dfci_profile(simulators, "excludes-vms", all_devices(VMS_ONLY, "exclude"))
    dfci_profile(simulators, "includes-vms", all_devices(VMS_ONLY, "include"))

    reached = await reaching_the_vm(services)

    assert SAMPLE_DFCI not in reached  # the sample's: include filter (device.model -ne "Virtual Machine")
    assert "excludes-vms" not in reached
    assert reached["includes-vms"].unevaluated is None
    assert (
        reached["includes-vms"].via
        == "all devices, include filter 'Virtual machines' (f17e0002-0000-4000-8000-000000000002) matched"
    )


async def test_the_filter_of_a_v1_template_profile_and_of_a_compliance_policy_is_read_from_beta(
    services: Services, simulators: Simulators
) -> None:
    add_filter(simulators, VMS_ONLY, '(device.model -eq "Virtual Machine")')
    simulators.tenant.configurations[BITLOCKER]["assignments"] = all_devices(VMS_ONLY, "exclude")
    simulators.tenant.compliance_policies[SECURE_BOOT]["assignments"] = all_devices(VMS_ONLY, "exclude")

    reached = await reaching_the_vm(services)

    assert BITLOCKER not in reached
    assert SECURE_BOOT not in reached
    policies = {policy.id: policy for policy in await services.directory.intune_policies()}
    assert policies[BITLOCKER].settings == {
        "bitLockerEncryptDevice": True,
        "bitLockerDisableWarningForOtherDiskEncryption": True,
    }  # still v1.0's
    assert [(t.filter_type, t.filter and t.filter.id) for t in policies[SECURE_BOOT].targets] == [("exclude", VMS_ONLY)]


async def test_a_settings_catalog_policy_gets_its_filter_too(services: Services, simulators: Simulators) -> None:
    add_filter(simulators, VMS_ONLY, '(device.model -eq "Virtual Machine")')
    catalog = simulators.tenant.configuration_policies[CATALOG]
    catalog["assignments"] = [{**assignment, "source": "direct"} for assignment in all_devices(VMS_ONLY, "include")]

    reached = await reaching_the_vm(services)

    assert "include filter 'Virtual machines'" in reached[CATALOG].via


async def test_a_filter_the_tenant_doesnt_list_keeps_the_policy_and_says_which(
    services: Services, simulators: Simulators
) -> None:
    unknown = "f17e0009-0000-4000-8000-000000000009"
    dfci_profile(simulators, "unknown-filter", all_devices(unknown, "exclude"))

    reached = await reaching_the_vm(services)

    assert reached["unknown-filter"].unevaluated is not None
    assert unknown in reached["unknown-filter"].unevaluated


async def test_filters_are_read_once_per_policy_cache_period_and_every_page_of_them(
    services: Services, simulators: Simulators
) -> None:
    for number in range(2, 6):
        add_filter(simulators, f"f17e000{number}-0000-4000-8000-00000000000{number}", '(device.model -eq "x")')
    simulators.graph_router.page_size = 2

    first = await services.directory.intune_policies()
    await services.directory.intune_policies()

    filter_reads = simulators.graph.calls("GET", FILTERS)
    assert len(filter_reads) == 3  # five filters, two a page: one read of three pages, not a second read
    assert all(request.query.get("$select") == "id,displayName,platform,rule" for request in filter_reads)
    (dfci,) = [policy for policy in first if policy.id == SAMPLE_DFCI]
    (target,) = dfci.targets
    assert target.filter is not None
    assert target.filter.rule == '(device.model -ne "Virtual Machine")'


async def test_no_filter_is_read_when_no_assignment_names_one(services: Services, simulators: Simulators) -> None:
    simulators.tenant.configurations.pop(SAMPLE_DFCI)

    policies: list[Policy] = await services.directory.intune_policies()

    assert policies
    assert not simulators.graph.calls("GET", FILTERS)
    assert simulators.tenant.assignment_filters  # there are some: they just aren't needed
