"""Enterprise multi-session hosts get only what Intune applies to them (the multi-session document,
"Create the configuration profile" and "Compliance and Conditional access"): a template profile
other than certificates and VPN isn't delivered, and compliance settings outside the documented
list report "Not applicable", so neither is a finding there; a settings-catalog policy is.

Policies are built from Graph's JSON shapes, as the adapter reads them (`policy_from_json`)."""

from __future__ import annotations

from typing import Any

from responder.decisions.facts import HostPool
from responder.decisions.graph_documents import policy_from_json
from responder.decisions.intune_policies import COMPLIANCE, CONFIGURATION, Policy, assigned_to_device
from responder.decisions.prerequisites import CheckFacts, DeviceFacts, check_device
from tests.test_prerequisites import PERSONAL, POOLED, marketplace, vm

GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a5d0"
ALL_DEVICES = {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}
MULTI_SESSION_IMAGE = marketplace("win11-23h2-avd")
SINGLE_SESSION_IMAGE = marketplace("win11-23h2-ent")


def policy(odata_type: str, category: str = CONFIGURATION, **settings: Any) -> Policy:
    document = {
        "@odata.type": f"#microsoft.graph.{odata_type}",
        "id": f"id-{odata_type}",
        "displayName": f"{odata_type} policy",
        **settings,
        "assignments": [{"id": "a0", "target": ALL_DEVICES}],
    }
    return policy_from_json(document, category)


BITLOCKER_TEMPLATE = policy("windows10EndpointProtectionConfiguration", bitLockerEncryptDevice=True)
WIFI_TEMPLATE = policy("windowsWifiConfiguration")
SECURE_BOOT_COMPLIANCE = policy("windows10CompliancePolicy", COMPLIANCE, secureBootEnabled=True)
RDP_OFF_TEMPLATE = policy(
    "windows10CustomConfiguration",
    omaSettings=[
        {
            "@odata.type": "#microsoft.graph.omaSettingString",
            "omaUri": "./Device/Vendor/MSFT/Policy/Config/RemoteDesktopServices/AllowUsersToConnectRemotely",
            "value": "<disabled/>",
        }
    ],
)


def rules_found(*policies: Policy, image: Any = MULTI_SESSION_IMAGE, pool: HostPool = POOLED) -> set[str]:
    facts = CheckFacts(
        vm(image),
        host_pool=pool,
        device=DeviceFacts("md-1", policies=assigned_to_device(policies, frozenset({GROUP}))),
    )
    return {finding.rule_id for finding in check_device(facts)}


def test_a_bitlocker_template_profile_is_not_applicable_on_a_multi_session_host() -> None:
    assert rules_found(BITLOCKER_TEMPLATE) == set()


def test_a_wifi_template_profile_is_not_applicable_on_a_multi_session_host() -> None:
    assert rules_found(WIFI_TEMPLATE) == set()


def test_a_secure_boot_compliance_setting_is_not_applicable_on_a_multi_session_host() -> None:
    assert rules_found(SECURE_BOOT_COMPLIANCE) == set()


def test_a_custom_template_that_disables_remote_connections_is_not_delivered_to_a_multi_session_host() -> None:
    assert rules_found(RDP_OFF_TEMPLATE) == set()


def test_the_same_template_profiles_are_findings_on_a_single_session_personal_host() -> None:
    found = rules_found(
        BITLOCKER_TEMPLATE,
        WIFI_TEMPLATE,
        SECURE_BOOT_COMPLIANCE,
        RDP_OFF_TEMPLATE,
        image=SINGLE_SESSION_IMAGE,
        pool=PERSONAL,
    )

    assert found == {"tpm-profile", "tpm-compliance", "remote-access"}


# --- Windows 10 2004, 20H2 and 21H1 multi-session: the July 2021 update --------------------------

MULTI_SESSION_21H1 = marketplace("21h1-evd", offer="Windows-10")


def create_time(**changes: Any) -> set[tuple[str, str]]:
    from responder.decisions.prerequisites import check

    facts = CheckFacts(vm(MULTI_SESSION_21H1, **changes), host_pool=POOLED)
    return {(finding.rule_id, finding.severity) for finding in check(facts) if finding.rule_id == "os-update"}


def test_a_21h1_multi_session_host_before_the_july_2021_update_is_a_warning() -> None:
    assert create_time(os_name="Windows 10 Enterprise multi-session", os_version="10.0.19043.1023") == {
        ("os-update", "warning")
    }


def test_a_21h1_multi_session_host_with_the_july_2021_update_is_not() -> None:
    assert create_time(os_name="Windows 10 Enterprise multi-session", os_version="10.0.19043.1110") == set()


def test_a_21h1_multi_session_host_whose_update_level_is_not_reported_yet_is_said_once_as_info() -> None:
    assert create_time() == {("os-update", "info")}


def test_a_22h2_multi_session_host_needs_no_such_update() -> None:
    from responder.decisions.prerequisites import check

    facts = CheckFacts(vm(marketplace("win10-22h2-avd", offer="Windows-10")), host_pool=POOLED)
    assert [finding for finding in check(facts) if finding.rule_id == "os-update"] == []


def test_a_settings_catalog_bitlocker_policy_is_still_a_finding_on_a_multi_session_host() -> None:
    from responder.decisions.intune_policies import configuration_policy_from_json

    document = {
        "@odata.type": "#microsoft.graph.deviceManagementConfigurationPolicy",
        "id": "sc-bitlocker",
        "name": "BitLocker (settings catalog)",
        "templateReference": {"templateFamily": "none"},
        "assignments": [{"id": "a0", "target": ALL_DEVICES}],
    }
    settings = [
        {
            "id": "0",
            "settingInstance": {
                "@odata.type": "#microsoft.graph.deviceManagementConfigurationChoiceSettingInstance",
                "settingDefinitionId": "device_vendor_msft_bitlocker_requiredeviceencryption",
                "choiceSettingValue": {
                    "value": "device_vendor_msft_bitlocker_requiredeviceencryption_1",
                    "children": [],
                },
            },
        }
    ]

    assert rules_found(configuration_policy_from_json(document, settings)) == {"tpm-profile"}
