"""Legacy Endpoint security profiles (issue 28, item 1): BitLocker in a *Windows 10 and later* disk
encryption profile or a security baseline made before the settings catalog templates.

Microsoft's Endpoint security articles for the deprecated profiles say existing ones can still be edited
and used; Graph serves them only as beta `deviceManagementIntent`s, their settings as
`deviceManagementSettingInstance`s named `deviceConfiguration--windows10EndpointProtectionConfiguration_<property>`
with the value in `valueJson`. The multi-session document says Endpoint security applies there only on the
*Windows 10, Windows 11, and Windows Server* platform, and security baselines not at all.

The rules are fed Graph's JSON shapes (`intent_from_json`); the reads go through the real Graph adapter to
the local Graph.
"""

from __future__ import annotations

from typing import Any

from localdev.simulators import Simulators
from responder.decisions.facts import HostPool
from responder.decisions.intune_policies import INTENT, Policy, assigned_to_device, intent_from_json
from responder.decisions.prerequisites import CheckFacts, DeviceFacts, check_device
from responder.ports import Services
from tests.test_multi_session_rules import MULTI_SESSION_IMAGE, SINGLE_SESSION_IMAGE
from tests.test_prerequisites import POOLED, vm

PREFIX = "deviceConfiguration--windows10EndpointProtectionConfiguration_"
ALL_DEVICES = {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}
ALL_USERS = {"@odata.type": "#microsoft.graph.allLicensedUsersAssignmentTarget"}
INTENT_ID = "1e7e0001-0000-4000-8000-000000000001"


def boolean(name: str, value: bool) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.deviceManagementBooleanSettingInstance",
        "id": f"s-{name}",
        "definitionId": f"{PREFIX}{name}",
        "valueJson": "true" if value else "false",
        "value": value,
    }


def complex_setting(name: str, value_json: str) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.deviceManagementComplexSettingInstance",
        "id": f"s-{name}",
        "definitionId": f"{PREFIX}{name}",
        "valueJson": value_json,
    }


ENCRYPT = boolean("bitLockerEncryptDevice", True)
DONT_ENCRYPT = boolean("bitLockerEncryptDevice", False)


def intent(*settings: dict[str, Any], target: dict[str, Any] = ALL_DEVICES) -> Policy:
    document = {"id": INTENT_ID, "displayName": "BitLocker (legacy)", "isAssigned": True}
    return intent_from_json(document, [{"id": "a0", "target": target}], list(settings))


def findings(*policies: Policy, image: Any = SINGLE_SESSION_IMAGE, pool: HostPool | None = None) -> set[str]:
    facts = CheckFacts(
        vm(image), host_pool=pool, device=DeviceFacts("md-1", policies=assigned_to_device(policies, frozenset()))
    )
    return {finding.rule_id for finding in check_device(facts)}


def test_a_legacy_endpoint_security_profile_that_encrypts_the_device_is_a_tpm_profile_finding() -> None:
    assert findings(intent(ENCRYPT)) == {"tpm-profile"}


def test_the_finding_names_the_deprecated_profile_and_the_setting() -> None:
    facts = CheckFacts(
        vm(SINGLE_SESSION_IMAGE),
        device=DeviceFacts("md-1", policies=assigned_to_device([intent(ENCRYPT)], frozenset())),
    )

    (finding,) = check_device(facts)

    assert "'BitLocker (legacy)'" in finding.message + finding.evidence
    assert INTENT_ID in finding.message + finding.evidence
    assert "Windows 10 and later, deprecated" in finding.evidence
    assert "bitLockerEncryptDevice" in finding.evidence


def test_a_legacy_profile_that_leaves_encryption_off_is_no_finding() -> None:
    removable_only_off = complex_setting("bitLockerRemovableDrivePolicy", '{"requireEncryptionForWriteAccess":false}')

    assert findings(intent(DONT_ENCRYPT, removable_only_off)) == set()


def test_a_complex_bitlocker_setting_that_asks_for_encryption_is_read_from_its_value_json() -> None:
    removable = complex_setting("bitLockerRemovableDrivePolicy", '{"requireEncryptionForWriteAccess":true}')

    assert findings(intent(removable)) == {"tpm-profile"}


def test_a_value_that_is_not_json_asks_for_nothing() -> None:
    garbled = {**ENCRYPT, "valueJson": "tru"}

    assert intent(garbled).settings == {"bitLockerEncryptDevice": None}


def test_settings_other_than_the_bitlocker_ones_are_not_kept() -> None:
    firewall = boolean("firewallBlockStatefulFTP", True)

    assert intent(ENCRYPT, firewall).settings == {"bitLockerEncryptDevice": True}


def test_a_legacy_profile_is_not_applicable_on_a_multi_session_host() -> None:
    assert findings(intent(ENCRYPT), image=MULTI_SESSION_IMAGE, pool=POOLED) == set()


def test_a_legacy_profile_assigned_to_users_only_does_not_reach_the_device() -> None:
    assert findings(intent(ENCRYPT, target=ALL_USERS)) == set()


# --- read through the real adapter ---------------------------------------------------------------------


def seed(simulators: Simulators, intent_id: str, targets: list[dict[str, Any]], *settings: dict[str, Any]) -> None:
    simulators.tenant.intents[intent_id] = {
        "id": intent_id,
        "displayName": f"intent {intent_id[:8]}",
        "templateId": "d1174162-1dd2-4976-affc-6667049ab0ae",
        "assignments": [{"id": f"a{n}", "target": target} for n, target in enumerate(targets)],
        "settings": list(settings),
    }


def intent_reads(simulators: Simulators) -> list[str]:
    return [request.path for request in simulators.graph.operations if "/intents" in request.path]


async def test_an_assigned_legacy_bitlocker_profile_is_read_with_its_settings(
    services: Services, simulators: Simulators
) -> None:
    seed(simulators, INTENT_ID, [ALL_DEVICES], ENCRYPT)

    policies = {policy.id: policy for policy in await services.directory.intune_policies()}

    assert policies[INTENT_ID].odata_type == INTENT
    assert policies[INTENT_ID].settings == {"bitLockerEncryptDevice": True}
    assert policies[INTENT_ID].targets[0].kind == "all-devices"


async def test_an_unassigned_legacy_profile_costs_no_read_beyond_the_list(
    services: Services, simulators: Simulators
) -> None:
    seed(simulators, INTENT_ID, [], ENCRYPT)

    policies = {policy.id for policy in await services.directory.intune_policies()}

    assert INTENT_ID not in policies
    assert intent_reads(simulators) == ["/beta/deviceManagement/intents"]


async def test_the_settings_of_a_profile_assigned_to_users_only_are_not_read(
    services: Services, simulators: Simulators
) -> None:
    seed(simulators, INTENT_ID, [ALL_USERS], ENCRYPT)

    await services.directory.intune_policies()

    assert f"/beta/deviceManagement/intents/{INTENT_ID}/settings" not in intent_reads(simulators)
    assert f"/beta/deviceManagement/intents/{INTENT_ID}/assignments" in intent_reads(simulators)
