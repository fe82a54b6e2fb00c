"""The beta reads through the adapter and the simulator: which configuration policies get their settings read.

Settings are read one policy at a time, so only a policy that can matter to a Windows VM's device
is read: Windows MDM (`platforms` windows10, `technologies` mdm) and assigned to devices or groups.
"""

from __future__ import annotations

import copy
from typing import Any

from localdev.simulators import Simulators
from responder.ports import Services

SAMPLE_POLICY = "c5c50001-0000-4000-8000-000000000001"  # the sample tenant's settings-catalog BitLocker policy


def variant(simulators: Simulators, policy_id: str, **changes: Any) -> None:
    policy = copy.deepcopy(simulators.tenant.configuration_policies[SAMPLE_POLICY])
    simulators.tenant.configuration_policies[policy_id] = {**policy, "id": policy_id, **changes}


def settings_read(simulators: Simulators) -> set[str]:
    return {
        request.path.split("/")[-2]
        for request in simulators.graph.operations
        if request.path.startswith("/beta/deviceManagement/configurationPolicies/")
    }


async def test_only_windows_mdm_policies_assigned_to_devices_have_their_settings_read(
    services: Services, simulators: Simulators
) -> None:
    variant(simulators, "macos", platforms="macOS")
    variant(simulators, "defender-for-endpoint", technologies="microsoftSense")
    variant(simulators, "unassigned", assignments=[])
    for_users = {"@odata.type": "#microsoft.graph.allLicensedUsersAssignmentTarget"}
    variant(simulators, "users-only", assignments=[{"id": "u", "source": "direct", "target": for_users}])
    variant(simulators, "both-platforms", platforms="windows10,macOS")

    policies = await services.directory.intune_policies()

    assert settings_read(simulators) == {SAMPLE_POLICY, "both-platforms"}
    assert {policy.id for policy in policies} >= {SAMPLE_POLICY, "both-platforms"}
    assert not {"macos", "defender-for-endpoint", "unassigned", "users-only"} & {policy.id for policy in policies}


async def test_a_configuration_policy_is_read_with_its_classified_settings_and_its_targets(
    services: Services, simulators: Simulators
) -> None:
    policies = {policy.id: policy for policy in await services.directory.intune_policies()}

    read = policies[SAMPLE_POLICY]
    assert read.display_name == "Windows - Disk encryption (settings catalog)"
    assert [target.kind for target in read.targets] == ["group"]
    assert {instance["settingDefinitionId"] for instance in read.settings["settingInstances"]} == {
        "device_vendor_msft_bitlocker_requiredeviceencryption",
        "device_vendor_msft_bitlocker_fixeddrivesrecoveryoptions",
        "device_vendor_msft_bitlocker_fixeddrivesrecoveryoptions_fdvhiderecoverypage",
    }
