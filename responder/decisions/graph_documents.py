"""Microsoft Graph's JSON, as the plain values the decisions read (`responder.decisions.facts`, `intune_policies`).

Pure: the Graph adapter reads documents with these, and tests build facts from Graph's
own shapes with them. Only the fields a decision needs are carried.
"""

from __future__ import annotations

from typing import Any

from responder.decisions.facts import EntraDevice, ManagedDevice
from responder.decisions.intune_policies import Policy, settings_read, target_from_json
from responder.decisions.model import parse_moment


def managed_device_from_json(document: dict[str, Any]) -> ManagedDevice:
    return ManagedDevice(
        id=str(document["id"]),
        device_name=document.get("deviceName"),
        azure_ad_device_id=document.get("azureADDeviceId"),
        model=document.get("model"),
        enrolled_at=parse_moment(document.get("enrolledDateTime")),
        last_sync_at=parse_moment(document.get("lastSyncDateTime")),
        enrollment_type=document.get("deviceEnrollmentType"),
        enrollment_profile_name=document.get("enrollmentProfileName"),
        manufacturer=document.get("manufacturer"),
        os_version=document.get("osVersion"),
        owner_type=document.get("managedDeviceOwnerType"),
        category=document.get("deviceCategoryDisplayName"),
    )


def entra_device_from_json(document: dict[str, Any]) -> EntraDevice:
    return EntraDevice(
        object_id=str(document["id"]),
        device_id=document.get("deviceId"),
        display_name=document.get("displayName"),
        trust_type=document.get("trustType"),
        physical_ids=tuple(document.get("physicalIds") or ()),
        on_premises_sync_enabled=bool(document.get("onPremisesSyncEnabled")),
        last_sign_in_at=parse_moment(document.get("approximateLastSignInDateTime")),
        registered_at=parse_moment(document.get("registrationDateTime")),
    )


def policy_from_json(document: dict[str, Any], category: str) -> Policy:
    """A profile or compliance policy as Graph serves it, with only the settings the rules read."""
    assignments = document.get("assignments") or []
    targets = tuple(
        target_from_json(assignment["target"])
        for assignment in assignments
        if isinstance(assignment, dict) and isinstance(assignment.get("target"), dict)
    )
    return Policy(
        id=str(document.get("id")),
        display_name=str(document.get("displayName") or ""),
        category=category,
        odata_type=str(document.get("@odata.type") or ""),
        settings=settings_read(document),
        targets=targets,
    )
