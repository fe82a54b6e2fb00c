"""Settings: one typed object from the app settings, every bad setting named."""

from __future__ import annotations

import pytest

from responder.decisions.settings import SETTING_NAMES, Mode, Settings, SettingsError

AZURITE = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:1/devstoreaccount1;"
SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    return raised.value.problems


def test_defaults_are_audit_mode_and_the_standard_table() -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": AZURITE})

    assert settings.mode is Mode.AUDIT
    assert settings.ledger_table == "vmledger"
    assert settings.allowed_subscriptions == frozenset()
    assert settings.opt_out_tag == ("intune-responder", "ignore")
    assert settings.storage.connection_string == AZURITE


def test_enforce_mode_is_read_case_insensitively() -> None:
    assert Settings.from_env({"AzureWebJobsStorage": AZURITE, "RESPONDER_MODE": "Enforce"}).mode is Mode.ENFORCE


def test_a_managed_identity_account_derives_the_service_uris() -> None:
    client_id = "0f0e0d0c-0b0a-4909-8807-060504030201"
    settings = Settings.from_env(
        {"AzureWebJobsStorage__accountName": "stresponder", "AzureWebJobsStorage__clientId": client_id}
    )

    assert settings.storage.table_service_uri == "https://stresponder.table.core.windows.net"
    assert settings.storage.queue_service_uri == "https://stresponder.queue.core.windows.net"
    assert settings.storage.client_id == client_id
    assert settings.storage.connection_string is None


def test_explicit_service_uris_win_over_the_derived_ones() -> None:
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage__accountName": "stresponder",
            "AzureWebJobsStorage__tableServiceUri": "https://tables.example.test",
        }
    )

    assert settings.storage.table_service_uri == "https://tables.example.test"


def test_an_unknown_mode_is_named() -> None:
    (problem,) = problems_of({"AzureWebJobsStorage": AZURITE, "RESPONDER_MODE": "enforced"})

    assert problem.startswith("RESPONDER_MODE")
    assert "'enforced'" in problem


def test_missing_storage_names_the_settings_to_set() -> None:
    (problem,) = problems_of({})

    assert "AzureWebJobsStorage__accountName" in problem


def test_a_token_is_never_sent_to_a_plain_http_uri() -> None:
    (problem,) = problems_of(
        {
            "AzureWebJobsStorage__tableServiceUri": "http://127.0.0.1:10002/acct",
            "AzureWebJobsStorage__queueServiceUri": "https://queues.example.test",
        }
    )

    assert problem.startswith("AzureWebJobsStorage__tableServiceUri")


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        {
            "RESPONDER_MODE": "loud",
            "RESPONDER_LEDGER_TABLE": "no-dashes",
            "RESPONDER_ALLOWED_SUBSCRIPTIONS": "prod",
            "RESPONDER_ALLOWED_RESOURCE_GROUPS": "rg-only",
            "RESPONDER_OPT_OUT_TAG": "novalue",
            "AzureWebJobsStorage__accountName": "st",
            "AzureWebJobsStorage__clientId": "not-a-guid",
        }
    )

    named = {problem.split(":")[0] for problem in problems}
    assert named == {
        "RESPONDER_MODE",
        "RESPONDER_LEDGER_TABLE",
        "RESPONDER_ALLOWED_SUBSCRIPTIONS",
        "RESPONDER_ALLOWED_RESOURCE_GROUPS",
        "RESPONDER_OPT_OUT_TAG",
        "AzureWebJobsStorage__clientId",
    }


def test_allow_lists_are_normalised() -> None:
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage": AZURITE,
            "RESPONDER_ALLOWED_SUBSCRIPTIONS": f" {SUB.upper()} ;",
            "RESPONDER_ALLOWED_RESOURCE_GROUPS": f"{SUB}/RG-AVD-Prod, {SUB}/rg-lab",
        }
    )

    assert settings.allowed_subscriptions == {SUB}
    assert settings.allowed_resource_groups == {f"{SUB}/rg-avd-prod", f"{SUB}/rg-lab"}


def test_the_opt_out_tag_is_split_into_name_and_value() -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": AZURITE, "RESPONDER_OPT_OUT_TAG": "Intune=Skip"})

    assert settings.opt_out_tag == ("intune", "skip")


def test_every_setting_read_is_declared() -> None:
    read: list[str] = []

    class Spy(dict[str, str]):
        def get(self, key: str, default: object = None) -> str:
            read.append(key)
            return str(super().get(key, default or ""))

    Settings.from_env(Spy({"AzureWebJobsStorage__accountName": "st"}))

    assert set(read) <= set(SETTING_NAMES)
    assert set(SETTING_NAMES) <= set(read)


def test_the_object_built_with_nothing_set_is_the_declared_defaults() -> None:
    """One default per setting: the typed object's defaults and the declarations agree."""
    from responder.decisions.settings import StorageSettings

    read = Settings.from_env({"AzureWebJobsStorage": AZURITE})

    assert read == Settings(storage=StorageSettings(connection_string=AZURITE))


def test_every_declared_setting_is_read() -> None:
    from responder.decisions.settings import DECLARED

    assert len({setting.name for setting in DECLARED}) == len(DECLARED) == len(SETTING_NAMES)
