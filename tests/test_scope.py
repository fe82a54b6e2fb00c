"""The allow-lists of design §7."""

from __future__ import annotations

from responder.decisions.model import VmRef
from responder.decisions.scope import opted_out, out_of_scope_reason
from responder.decisions.settings import Settings, StorageSettings

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
OTHER = "99999999-8888-4777-8666-555555555555"
VM = VmRef(SUB, "rg-avd-prod", "vm1")


def settings(subscriptions: set[str] = set(), groups: set[str] = set()) -> Settings:  # noqa: B006
    return Settings(
        storage=StorageSettings(connection_string="x=y"),
        allowed_subscriptions=frozenset(subscriptions),
        allowed_resource_groups=frozenset(groups),
    )


def test_without_allow_lists_every_vm_is_in_scope() -> None:
    assert out_of_scope_reason(VM, settings()) is None


def test_a_vm_in_an_allowed_subscription_is_in_scope() -> None:
    assert out_of_scope_reason(VM, settings(subscriptions={SUB})) is None


def test_a_vm_in_an_allowed_resource_group_is_in_scope() -> None:
    assert out_of_scope_reason(VM, settings(subscriptions={OTHER}, groups={f"{SUB}/rg-avd-prod"})) is None


def test_a_vm_elsewhere_is_out_of_scope_with_the_reason() -> None:
    reason = out_of_scope_reason(VM, settings(groups={f"{SUB}/rg-lab"}))

    assert reason is not None
    assert "rg-avd-prod" in reason


def test_the_same_group_name_in_another_subscription_is_out_of_scope() -> None:
    assert out_of_scope_reason(VM, settings(groups={f"{OTHER}/rg-avd-prod"})) is not None


def test_the_opt_out_tag_is_matched_case_insensitively() -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})

    assert opted_out({"Intune-Responder": "Ignore"}, settings)
    assert not opted_out({"intune-responder": "watch"}, settings)
    assert not opted_out({}, settings)
