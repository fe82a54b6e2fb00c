"""The device-side rules (after enrolment): which policies reach the device, and what each finding names.

Policies are built from Graph's JSON shapes (`policy_from_json`), as the adapter reads them.
"""

from __future__ import annotations

from typing import Any

import pytest

from responder.decisions.graph_documents import policy_from_json
from responder.decisions.intune_policies import (
    COMPLIANCE,
    CONFIGURATION,
    Policy,
    assigned_to_device,
    configuration_policy_from_json,
    filter_from_json,
    with_filters,
)
from responder.decisions.os_identity import identify_os
from responder.decisions.prerequisites import DEVICE_RULES, CheckFacts, DeviceFacts, cannot_enrol, check, check_device
from tests.test_prerequisites import PERSONAL, marketplace, vm

GROUP, OTHER_GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a5d0", "6b000000-0000-4000-8000-000000000001"
ALL_DEVICES = {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}
ALL_USERS = {"@odata.type": "#microsoft.graph.allLicensedUsersAssignmentTarget"}


def to_group(group: str = GROUP) -> dict[str, str]:
    return {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": group}


def excluding(group: str = GROUP) -> dict[str, str]:
    return {"@odata.type": "#microsoft.graph.exclusionGroupAssignmentTarget", "groupId": group}


def policy(odata_type: str, *targets: dict[str, str], category: str = CONFIGURATION, **settings: Any) -> Policy:
    document = {
        "@odata.type": f"#microsoft.graph.{odata_type}",
        "id": f"id-{odata_type}",
        "displayName": f"{odata_type} policy",
        **settings,
        "assignments": [{"id": f"a{n}", "target": target} for n, target in enumerate(targets)],
    }
    return policy_from_json(document, category)


BITLOCKER = policy("windows10EndpointProtectionConfiguration", ALL_DEVICES, bitLockerEncryptDevice=True)
FIREWALL_ONLY = policy("windows10EndpointProtectionConfiguration", ALL_DEVICES, firewallBlockStatefulFTP=True)
DFCI = policy("windows10DeviceFirmwareConfigurationInterface", ALL_DEVICES)
WIFI = policy("windowsWifiConfiguration", to_group())
DOMAIN_JOIN = policy("windowsDomainJoinConfiguration", ALL_DEVICES)
SECURE_BOOT = policy("windows10CompliancePolicy", ALL_DEVICES, category=COMPLIANCE, secureBootEnabled=True)
PASSWORD_ONLY = policy("windows10CompliancePolicy", ALL_DEVICES, category=COMPLIANCE, passwordRequired=True)
RDP_OFF = policy(
    "windows10CustomConfiguration",
    ALL_DEVICES,
    omaSettings=[
        {
            "@odata.type": "#microsoft.graph.omaSettingString",
            "omaUri": "./Device/Vendor/MSFT/Policy/Config/RemoteDesktopServices/AllowUsersToConnectRemotely",
            "value": "<disabled/>",
        }
    ],
)


def findings(
    *policies: Policy, avd: bool = False, groups: frozenset[str] = frozenset({GROUP}), **device: Any
) -> set[tuple[str, str]]:
    facts = CheckFacts(
        vm(),
        host_pool=PERSONAL if avd else None,
        device=DeviceFacts("md-1", policies=assigned_to_device(policies, groups), **device),
    )
    return {(finding.rule_id, finding.severity) for finding in check_device(facts)}


def test_a_bitlocker_profile_is_a_finding_on_any_vm() -> None:
    assert findings(BITLOCKER) == {("tpm-profile", "warning")}


def test_an_endpoint_protection_profile_without_bitlocker_settings_is_not() -> None:
    assert findings(FIREWALL_ONLY) == set()


def test_a_dfci_profile_is_a_finding_on_any_vm() -> None:
    assert findings(DFCI) == {("tpm-profile", "warning")}


@pytest.mark.parametrize("profile", [WIFI, DOMAIN_JOIN], ids=["wi-fi", "domain join"])
def test_wifi_and_domain_join_profiles_are_findings_on_avd_hosts_only(profile: Policy) -> None:
    assert findings(profile) == set()
    assert findings(profile, avd=True) == {("tpm-profile", "warning")}


def test_a_compliance_policy_requiring_secure_boot_is_a_finding_on_an_avd_host() -> None:
    assert findings(SECURE_BOOT, avd=True) == {("tpm-compliance", "warning")}


def test_a_compliance_policy_requiring_secure_boot_is_not_one_on_a_plain_vm() -> None:
    assert findings(SECURE_BOOT) == set()


def test_a_compliance_policy_without_tpm_settings_is_not_a_finding() -> None:
    assert findings(PASSWORD_ONLY, avd=True) == set()


def test_remote_desktop_disabled_by_a_custom_profile_is_an_error_on_an_avd_host() -> None:
    assert findings(RDP_OFF, avd=True) == {("remote-access", "error")}
    assert findings(RDP_OFF) == set()


def test_remote_desktop_set_to_a_value_that_cannot_be_read_is_a_warning_naming_the_profile() -> None:
    """Intune keeps custom OMA-URI values encrypted; reading one needs a role this app doesn't hold."""
    encrypted = policy(
        "windows10CustomConfiguration",
        ALL_DEVICES,
        omaSettings=[{**RDP_OFF.settings["omaSettings"][0], "value": "****"}],
    )

    assert findings(encrypted, avd=True) == {("remote-access", "warning")}


def test_remote_desktop_enabled_by_a_custom_profile_is_fine() -> None:
    enabled = policy(
        "windows10CustomConfiguration",
        ALL_DEVICES,
        omaSettings=[{**RDP_OFF.settings["omaSettings"][0], "value": "<enabled/>"}],
    )

    assert findings(enabled, avd=True) == set()


def test_a_vm_the_create_time_check_says_intune_cannot_manage_gets_no_device_check() -> None:
    server = check(CheckFacts(vm(marketplace("2022-datacenter", "WindowsServer", "MicrosoftWindowsServer"))))

    assert cannot_enrol(tuple(server))
    assert not cannot_enrol(tuple(check(CheckFacts(vm()))))


def test_autopilot_self_deploying_enrolment_is_an_error() -> None:
    assert findings(enrollment_type="windowsAzureADJoinUsingDeviceAuth") == {("autopilot", "error")}


def test_enrolment_through_an_autopilot_profile_is_an_oobe_note() -> None:
    assert findings(enrollment_type="windowsAzureADJoin", enrollment_profile_name="AP user-driven") == {
        ("oobe", "info")
    }


@pytest.mark.parametrize("served", ["azureAdJoinUsingAzureVmExtension", "unknownFutureValue"])
def test_the_azure_vm_extensions_join_is_not_autopilot_as_beta_names_it_or_as_v1_serves_it(served: str) -> None:
    assert findings(enrollment_type=served, enrollment_profile_name="leftover profile name") == set()


def test_a_policy_for_a_group_the_device_is_not_in_does_not_reach_it() -> None:
    assert findings(WIFI, avd=True, groups=frozenset({OTHER_GROUP})) == set()


def test_an_exclusion_of_one_of_the_devices_groups_wins_over_all_devices() -> None:
    excluded = policy("windows10EndpointProtectionConfiguration", ALL_DEVICES, excluding(), bitLockerEncryptDevice=True)
    assert findings(excluded) == set()
    assert findings(excluded, groups=frozenset()) == {("tpm-profile", "warning")}


def test_a_policy_for_all_users_is_not_counted_as_reaching_the_device() -> None:
    """User-targeted: it reaches a host only once someone signs in, and not in device context."""
    for_users = policy("windows10EndpointProtectionConfiguration", ALL_USERS, bitLockerEncryptDevice=True)

    assert assigned_to_device([for_users], frozenset({GROUP})) == ()


def test_an_unassigned_policy_reaches_no_device() -> None:
    unassigned = policy("windows10EndpointProtectionConfiguration", bitLockerEncryptDevice=True)
    assert findings(unassigned) == set()


def test_each_finding_names_the_policy_and_how_it_reaches_the_device() -> None:
    facts = CheckFacts(
        vm(), host_pool=PERSONAL, device=DeviceFacts("md-1", policies=assigned_to_device([WIFI], frozenset({GROUP})))
    )
    (finding,) = check_device(facts)
    assert "'windowsWifiConfiguration policy' (id-windowsWifiConfiguration)" in finding.message
    assert f"via group {GROUP}" in finding.evidence
    assert finding.phase == "device"


def test_a_linux_vm_and_a_vm_without_a_device_get_no_device_findings() -> None:
    linux = vm(marketplace("server", "ubuntu-24_04-lts", "Canonical"), (), os_type="Linux")
    device = DeviceFacts("md-1", policies=assigned_to_device([BITLOCKER], frozenset()))
    assert check_device(CheckFacts(linux, device=device)) == []
    assert check_device(CheckFacts(vm())) == []


def test_a_policy_keeps_only_the_settings_the_rules_read() -> None:
    wifi_with_key = policy("windowsWifiConfiguration", ALL_DEVICES, preSharedKey="hunter2", ssid="corp")
    custom = policy(
        "windows10CustomConfiguration",
        ALL_DEVICES,
        omaSettings=[
            {"omaUri": "./Device/Vendor/MSFT/VPNv2/corp/EAP", "value": "<secret/>"},
            *RDP_OFF.settings["omaSettings"],
        ],
    )

    assert wifi_with_key.settings == {}
    assert [setting["omaUri"] for setting in custom.settings["omaSettings"]] == [
        "./Device/Vendor/MSFT/Policy/Config/RemoteDesktopServices/AllowUsersToConnectRemotely"
    ]


def test_each_device_rule_reports_only_the_rule_ids_it_declares() -> None:
    everything = (BITLOCKER, DFCI, WIFI, DOMAIN_JOIN, SECURE_BOOT, RDP_OFF)
    device = DeviceFacts(
        "md-1",
        enrollment_type="windowsAzureADJoinUsingDeviceAuth",
        policies=assigned_to_device(everything, frozenset({GROUP})),
    )
    facts = CheckFacts(vm(), host_pool=PERSONAL, device=device)
    for rule in DEVICE_RULES:
        found = {finding.rule_id for finding in rule(facts, identify_os(facts.vm))}
        assert found
        assert found <= rule.ids, rule.check.__name__


# --- settings catalog and Endpoint security (Graph beta deviceManagementConfigurationPolicy) -----------

REQUIRE_ENCRYPTION = "device_vendor_msft_bitlocker_requiredeviceencryption"
REMOTE = "device_vendor_msft_policy_config_remotedesktopservices_allowuserstoconnectremotely"


def choice(definition: str, option: str, *children: dict[str, Any]) -> dict[str, Any]:
    """A deviceManagementConfigurationChoiceSettingInstance, as Graph beta serves it."""
    return {
        "@odata.type": "#microsoft.graph.deviceManagementConfigurationChoiceSettingInstance",
        "settingDefinitionId": definition,
        "settingInstanceTemplateReference": None,
        "choiceSettingValue": {
            "@odata.type": "#microsoft.graph.deviceManagementConfigurationChoiceSettingValue",
            "settingValueTemplateReference": None,
            "value": f"{definition}_{option}",
            "children": list(children),
        },
    }


def catalog(*instances: dict[str, Any], family: str = "none", target: dict[str, str] = ALL_DEVICES) -> Policy:
    """A configurationPolicies item (with `$expand=assignments`) and its `settings`."""
    document = {
        "id": "cp-1",
        "name": "Disk encryption",
        "platforms": "windows10",
        "technologies": "mdm",
        "templateReference": {"templateId": "", "templateFamily": family, "templateDisplayName": None},
        "assignments": [{"id": "a0", "source": "direct", "sourceId": "cp-1", "target": target}],
    }
    settings = [{"id": str(n), "settingInstance": instance} for n, instance in enumerate(instances)]
    return configuration_policy_from_json(document, settings)


def test_a_settings_catalog_bitlocker_policy_is_a_finding_on_any_vm() -> None:
    assert findings(catalog(choice(REQUIRE_ENCRYPTION, "1"))) == {("tpm-profile", "warning")}


def test_an_endpoint_security_disk_encryption_policy_is_named_as_made_there() -> None:
    disk_encryption = catalog(choice(REQUIRE_ENCRYPTION, "1"), family="endpointSecurityDiskEncryption")
    facts = CheckFacts(vm(), device=DeviceFacts("md-1", policies=assigned_to_device([disk_encryption], frozenset())))

    (finding,) = check_device(facts)

    assert "'Disk encryption' (cp-1)" in finding.message
    assert f"Endpoint security disk encryption: {REQUIRE_ENCRYPTION}" in finding.evidence


def test_a_bitlocker_setting_set_to_its_disabled_option_is_not_a_finding() -> None:
    assert findings(catalog(choice(REQUIRE_ENCRYPTION, "0"))) == set()


def test_a_bitlocker_setting_nested_under_another_setting_is_found() -> None:
    nested = choice("device_vendor_msft_bitlocker_systemdrivesrequirestartupauthentication", "1")
    parent = choice("device_vendor_msft_policy_config_other_setting", "1", nested)

    assert findings(catalog(parent)) == {("tpm-profile", "warning")}


def test_a_settings_catalog_policy_without_bitlocker_settings_is_not_a_finding() -> None:
    assert findings(catalog(choice("device_vendor_msft_policy_config_defender_allowrealtimemonitoring", "1"))) == set()


def test_a_settings_catalog_policy_for_a_group_the_device_is_not_in_does_not_reach_it() -> None:
    elsewhere = catalog(choice(REQUIRE_ENCRYPTION, "1"), target=to_group(OTHER_GROUP))
    assert findings(elsewhere) == set()


def test_remote_desktop_disabled_in_the_settings_catalog_is_an_error_on_an_avd_host() -> None:
    assert findings(catalog(choice(REMOTE, "0")), avd=True) == {("remote-access", "error")}
    assert findings(catalog(choice(REMOTE, "0"))) == set()


def test_remote_desktop_enabled_in_the_settings_catalog_is_fine() -> None:
    assert findings(catalog(choice(REMOTE, "1")), avd=True) == set()


def test_a_settings_catalog_policy_keeps_only_the_settings_the_rules_read() -> None:
    secret = {
        "@odata.type": "#microsoft.graph.deviceManagementConfigurationSimpleSettingInstance",
        "settingDefinitionId": "device_vendor_msft_bitlocker_recoverypassword",
        "simpleSettingValue": {
            "@odata.type": "#microsoft.graph.deviceManagementConfigurationSecretSettingValue",
            "value": "s3cret",
            "valueState": "encryptedValueToken",
        },
    }
    other = choice("device_vendor_msft_policy_config_wifi_allowwifi", "1")

    kept = catalog(choice(REQUIRE_ENCRYPTION, "1"), secret, other).settings["settingInstances"]

    assert kept == [
        {"settingDefinitionId": REQUIRE_ENCRYPTION, "value": f"{REQUIRE_ENCRYPTION}_1"},
        {"settingDefinitionId": "device_vendor_msft_bitlocker_recoverypassword", "value": None},
    ]


@pytest.mark.parametrize(
    "uri",
    [
        "./Device/Vendor/MSFT/Policy/Config/RemoteDesktopServices/AllowUsersToConnectRemotely",
        "./device/vendor/msft/policy/config/remotedesktopservices/allowuserstoconnectremotely",
        "./Vendor/MSFT/Policy/Config/RemoteDesktopServices/AllowUsersToConnectRemotely",
        " ./DEVICE/Vendor/MSFT/Policy/Config/RemoteDesktopServices/AllowUsersToConnectRemotely ",
    ],
    ids=["documented", "lower case", "without ./Device", "upper case, padded"],
)
def test_remote_desktop_disabled_by_any_documented_spelling_of_the_oma_uri_is_an_error(uri: str) -> None:
    custom = policy(
        "windows10CustomConfiguration",
        ALL_DEVICES,
        omaSettings=[{"@odata.type": "#microsoft.graph.omaSettingString", "omaUri": uri, "value": "<disabled/>"}],
    )
    assert findings(custom, avd=True) == {("remote-access", "error")}


def test_a_profile_whose_assignment_filter_cant_be_evaluated_is_reported_naming_the_filter() -> None:
    filtered = {
        **ALL_DEVICES,
        "deviceAndAppManagementAssignmentFilterId": "f-1",
        "deviceAndAppManagementAssignmentFilterType": "include",
    }
    unknown_property = with_filters(
        policy("windows10EndpointProtectionConfiguration", filtered, bitLockerEncryptDevice=True),
        {
            "f-1": filter_from_json(
                {"id": "f-1", "displayName": "Dell only", "rule": '(device.manufacturer -eq "Dell")'}
            )
        },
    )
    device = DeviceFacts(
        "md-1", policies=assigned_to_device([unknown_property], frozenset(), {"model": "Virtual Machine"})
    )

    (finding,) = check_device(CheckFacts(vm(), device=device))

    assert finding.rule_id == "tpm-profile"
    assert "'Dell only' (f-1)" in finding.message
    assert "manufacturer" in finding.message


def test_a_profile_an_include_filter_keeps_away_from_vms_is_not_reported() -> None:
    filtered = {
        **ALL_DEVICES,
        "deviceAndAppManagementAssignmentFilterId": "f-2",
        "deviceAndAppManagementAssignmentFilterType": "include",
    }
    not_vms = with_filters(
        policy("windows10EndpointProtectionConfiguration", filtered, bitLockerEncryptDevice=True),
        {
            "f-2": filter_from_json(
                {"id": "f-2", "displayName": "No VMs", "rule": '(device.model -ne "Virtual Machine")'}
            )
        },
    )
    device = DeviceFacts("md-1", policies=assigned_to_device([not_vms], frozenset(), {"model": "Virtual Machine"}))

    assert check_device(CheckFacts(vm(), device=device)) == []
