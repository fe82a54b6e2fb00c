"""Which VMs the responder may act on at all (design §7: allow-lists and the opt-out tag)."""

from __future__ import annotations

from collections.abc import Mapping

from responder.decisions.model import VmRef
from responder.decisions.settings import Settings


def out_of_scope_reason(vm: VmRef, settings: Settings) -> str | None:
    """Why the VM is outside the configured allow-lists, or None when it is inside.

    Both lists are optional; when both are set, a VM inside either is in scope.
    """
    subscriptions = settings.allowed_subscriptions
    groups = settings.allowed_resource_groups
    if not subscriptions and not groups:
        return None
    if vm.subscription_id in subscriptions:
        return None
    if f"{vm.subscription_id}/{vm.resource_group}" in groups:
        return None
    return f"subscription {vm.subscription_id} / resource group {vm.resource_group} is not in the allow-list"


def opted_out(tags: Mapping[str, str], settings: Settings) -> bool:
    """The VM carries the opt-out tag (names compared case-insensitively, as Azure does)."""
    name, value = settings.opt_out_tag
    return any(key.lower() == name and str(found).strip().lower() == value for key, found in tags.items())
