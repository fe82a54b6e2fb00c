"""Assignment filters (issue 28, item 3): a policy reaches the device only if its assignment's include filter
matches, or its exclude filter doesn't; a filter the app can't evaluate keeps the policy, saying why.

Targets and filters are written as Graph beta serves them (`deviceAndAppManagementAssignmentTarget`'s
filter id and type, `deviceAndAppManagementAssignmentFilter`'s rule): the rule syntax is Intune's
(memdocs intune/fundamentals/filters-device-properties.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from responder.decisions.facts import EntraDevice, ManagedDevice
from responder.decisions.graph_documents import entra_device_from_json, managed_device_from_json
from responder.decisions.intune_policies import (
    CONFIGURATION,
    Policy,
    UnevaluableFilter,
    assigned_to_device,
    evaluate_filter,
    filter_from_json,
    filter_properties,
    target_from_json,
    with_filters,
)

FILTER_ID = "9c8e1b2a-0000-4000-8000-00000000f001"
VM = {"deviceName": "avd-personal-11", "model": "Virtual Machine", "enrollmentProfileName": None}
# An AVD host's Intune record and Entra object as Graph v1.0 serves them (managedDevice, device).
AVD_HOST = managed_device_from_json(
    {
        "id": "5e1c0d4a-0000-4000-8000-0000000000d1",
        "deviceName": "avd-personal-11",
        "model": "Virtual Machine",
        "manufacturer": "Microsoft Corporation",
        "osVersion": "10.0.22631.4460",
        "managedDeviceOwnerType": "company",
        "deviceCategoryDisplayName": None,
        "deviceEnrollmentType": "windowsAzureADJoin",
        "enrollmentProfileName": None,
    }
)
ENTRA_JOINED = entra_device_from_json({"id": "0b5e0000-0000-4000-8000-0000000000e1", "trustType": "AzureAd"})


def properties_of(managed: ManagedDevice, entra: EntraDevice | None) -> dict[str, str | None]:
    return filter_properties(managed, entra)


def policy(filter_type: str, rule: str) -> Policy:
    target: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.allDevicesAssignmentTarget",
        "deviceAndAppManagementAssignmentFilterId": FILTER_ID,
        "deviceAndAppManagementAssignmentFilterType": filter_type,
    }
    graph_filter = {"id": FILTER_ID, "displayName": "Not VMs", "platform": "windows10AndLater", "rule": rule}
    found = Policy("p-1", "Wi-Fi", CONFIGURATION, "#microsoft.graph.windowsWifiConfiguration")
    found = Policy(found.id, found.display_name, found.category, found.odata_type, targets=(target_from_json(target),))
    return with_filters(found, {FILTER_ID: filter_from_json(graph_filter)})


def test_an_include_filter_that_matches_lets_the_policy_reach_the_device_and_is_named() -> None:
    (assigned,) = assigned_to_device([policy("include", '(device.model -eq "Virtual Machine")')], frozenset(), VM)

    assert assigned.unevaluated is None
    assert "include filter 'Not VMs'" in assigned.via
    assert "matched" in assigned.via


def test_an_include_filter_that_doesnt_match_keeps_the_policy_away() -> None:
    kept_away = policy("include", '(device.model -ne "Virtual Machine")')

    assert assigned_to_device([kept_away], frozenset(), VM) == ()


def test_an_exclude_filter_that_matches_keeps_the_policy_away() -> None:
    excluded = policy("exclude", '(device.model -eq "Virtual Machine")')

    assert assigned_to_device([excluded], frozenset(), VM) == ()


def test_an_exclude_filter_that_doesnt_match_lets_the_policy_reach_the_device() -> None:
    (assigned,) = assigned_to_device([policy("exclude", '(device.model -startsWith "Surface")')], frozenset(), VM)

    assert "not matched" in assigned.via


def test_a_rule_that_cant_be_parsed_keeps_the_policy_and_says_so() -> None:
    (assigned,) = assigned_to_device([policy("include", '(device.model -eq "Virtual Machine"')], frozenset(), VM)

    assert assigned.unevaluated is not None
    assert "'Not VMs'" in assigned.unevaluated
    assert "parenthesis" in assigned.unevaluated


def test_a_rule_on_a_property_the_app_doesnt_read_keeps_the_policy_and_names_the_property() -> None:
    rule = '(device.operatingSystemSKU -eq "ServerRdsh")'  # v1.0's managedDevice has no SKU

    (assigned,) = assigned_to_device([policy("include", rule)], frozenset(), properties_of(AVD_HOST, ENTRA_JOINED))

    assert assigned.unevaluated is not None
    assert "'Not VMs'" in assigned.unevaluated
    assert "operatingSystemSKU" in assigned.unevaluated


def test_a_filter_the_tenant_list_doesnt_hold_keeps_the_policy_and_says_so() -> None:
    found = with_filters(policy("include", '(device.model -eq "x")'), {})

    (assigned,) = assigned_to_device([found], frozenset(), VM)

    assert assigned.unevaluated is not None
    assert FILTER_ID in assigned.unevaluated


def test_properties_operators_and_values_are_case_insensitive() -> None:
    assert evaluate_filter('(DEVICE.MODEL -EQ "virtual machine")', VM) is True
    assert evaluate_filter('(device.Model -StartsWith "VIRTUAL")', VM) is True


def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    rule_or = '(device.model -eq "Surface") or (device.deviceName -startsWith "avd-") and (device.model -eq "x")'
    grouped = '((device.model -eq "Surface") or (device.deviceName -startsWith "avd-")) and (device.model -eq "x")'
    either = '(device.model -eq "Surface") -or ((device.deviceName -contains "personal") -and (device.model -ne "x"))'

    assert evaluate_filter(rule_or, VM) is False
    assert evaluate_filter(grouped, VM) is False
    assert evaluate_filter(either, VM) is True


def test_in_and_not_in_compare_with_a_list() -> None:
    assert evaluate_filter('(device.model -in ["Surface Book 3", "Virtual Machine"])', VM) is True
    assert evaluate_filter('(device.model -notIn ["Surface Book 3", "Virtual Machine"])', VM) is False


def test_null_compares_with_a_property_the_device_has_no_value_of() -> None:
    assert evaluate_filter("(device.enrollmentProfileName -eq $null)", VM) is True
    assert evaluate_filter("(device.enrollmentProfileName -ne null)", VM) is False


def test_an_operator_the_app_doesnt_evaluate_is_unevaluable() -> None:
    with pytest.raises(UnevaluableFilter, match="-gt"):
        evaluate_filter("(device.model -gt 10.0.22000)", VM)


def test_the_os_version_is_compared_as_a_version_not_as_text() -> None:
    device = properties_of(AVD_HOST, ENTRA_JOINED)  # 10.0.22631.4460: Windows 11 23H2

    assert evaluate_filter("(device.operatingSystemVersion -ge 10.0.22000)", device) is True
    assert evaluate_filter("(device.operatingSystemVersion -lt 10.0.22631.10000)", device) is True  # not "1" < "4"
    assert evaluate_filter('(device.operatingSystemVersion -gt "10.0.26100.0")', device) is False
    assert evaluate_filter("(device.operatingSystemVersion -eq 10.0.22631.4460)", device) is True


def test_the_os_version_as_text_keeps_the_string_operators() -> None:
    device = properties_of(AVD_HOST, ENTRA_JOINED)

    assert evaluate_filter('(device.osVersion -startsWith "10.0.22631")', device) is True


def test_a_string_operator_on_the_os_version_is_unevaluable_not_guessed() -> None:
    with pytest.raises(UnevaluableFilter, match="version"):
        evaluate_filter('(device.operatingSystemVersion -startsWith "10.0")', properties_of(AVD_HOST, None))


def test_the_manufacturer_and_ownership_come_from_the_intune_record() -> None:
    device = properties_of(AVD_HOST, ENTRA_JOINED)

    assert evaluate_filter('(device.manufacturer -eq "Microsoft Corporation")', device) is True
    assert evaluate_filter('(device.deviceOwnership -eq "Corporate")', device) is True
    assert evaluate_filter('(device.deviceOwnership -eq "Personal")', device) is False


def test_the_join_type_is_intunes_name_for_the_entra_objects_trust_type() -> None:
    hybrid = entra_device_from_json({"id": "0b5e0000-0000-4000-8000-0000000000e2", "trustType": "ServerAd"})

    assert evaluate_filter('(device.deviceTrustType -eq "Azure AD joined")', properties_of(AVD_HOST, ENTRA_JOINED))
    assert evaluate_filter('(device.deviceTrustType -eq "Hybrid Azure AD joined")', properties_of(AVD_HOST, hybrid))


def test_the_join_type_is_unevaluable_while_no_entra_object_is_proven() -> None:
    rule = '(device.deviceTrustType -ne "Azure AD registered")'

    (assigned,) = assigned_to_device([policy("exclude", rule)], frozenset(), properties_of(AVD_HOST, None))

    assert assigned.unevaluated is not None
    assert "deviceTrustType" in assigned.unevaluated
