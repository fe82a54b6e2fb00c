"""The app settings the responder reads, as one typed, validated object.

One declaration per setting (`Setting`: its name, its default, its parser); the
list of names the Bicep template is checked against (`SETTING_NAMES`), the ones it
deliberately doesn't set (`NOT_DEPLOYED`), the defaults and the validation all come
from those declarations. Validation collects every problem and names each bad
setting, so one failed start tells the admin all there is to fix. Settings are read
on first use, never at import: an exception while the host indexes `function_app.py`
would leave the app with zero functions (design §10).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from responder.decisions.clouds import CLOUDS, PUBLIC, Cloud

T = TypeVar("T")


class Mode(StrEnum):
    AUDIT = "audit"  # decide and record every action, perform none
    ENFORCE = "enforce"


class SettingsError(ValueError):
    """One or more app settings are missing or invalid; the message names each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid app settings: " + "; ".join(problems))


class Invalid(ValueError):
    """A parser's refusal: what it expected (the setting's name is added where it is read)."""


@dataclass(frozen=True)
class Setting(Generic[T]):  # noqa: UP046 (Python 3.11 stays importable for the benchmark)
    """One app setting: its name, what it is when unset, how its text becomes a value."""

    name: str
    default: T
    parse: Callable[[str], T]
    not_deployed: str | None = None  # why the Bicep template leaves it unset (tests/test_infra.py)

    def read(self, env: Mapping[str, str], problems: list[str]) -> T:
        raw = env.get(self.name, "").strip()
        if not raw:
            return self.default
        try:
            return self.parse(raw)
        except Invalid as problem:
            problems.append(f"{self.name}: {problem}")
            return self.default


DECLARED: list[Setting[object]] = []


def declare(  # noqa: UP047 (Python 3.11 stays importable for the benchmark)
    name: str, default: T, parse: Callable[[str], T], not_deployed: str | None = None
) -> Setting[T]:
    setting = Setting(name, default, parse, not_deployed)
    DECLARED.append(setting)  # type: ignore[arg-type]  # a Setting[T] is read as a Setting[object]
    return setting


# --- shared parsers -------------------------------------------------------------

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,55}[a-z0-9]$")  # 63 minus "-poison"
_CONTAINER_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")
MAX_QUEUE_DELAY_SECONDS = 7 * 24 * 3600  # Azure Storage queues' longest visibility delay


def optional_text(value: str) -> str | None:
    return value


def guid(what: str) -> Callable[[str], str | None]:
    def parse(value: str) -> str | None:
        if not _GUID.match(value.lower()):
            raise Invalid(f"{value!r} is not {what} (GUID)")
        return value.lower()

    return parse


def whole_number(low: int, high: int | None = None, unit: str = "") -> Callable[[str], int]:
    def parse(value: str) -> int:
        if value.isdigit() and int(value) >= low and (high is None or int(value) <= high):
            return int(value)
        span = f"{low}-{high}{f' {unit}' if unit else ''}" if high is not None else f"a whole number of at least {low}"
        raise Invalid(f"expected {span}, got {value!r}")

    return parse


def https_url(value: str) -> str:
    if not value.startswith("https://"):
        raise Invalid(f"{value!r} must be an https:// URL (tokens are never sent in clear)")
    return value.rstrip("/")


def optional_https_url(value: str) -> str | None:
    return https_url(value)


def named(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not pattern.match(value):
            raise Invalid(f"{value!r} is not a valid {what}")
        return value

    return parse


def boolean(value: str) -> bool:
    if value.lower() not in {"true", "false"}:
        raise Invalid(f"expected true or false, got {value!r}")
    return value.lower() == "true"


def mode(value: str) -> Mode:
    if value.lower() not in Mode._value2member_map_:
        raise Invalid(f"expected 'audit' or 'enforce', got {value!r}")
    return Mode(value.lower())


def items(each: Callable[[str], object] | None = None) -> Callable[[str], frozenset[str]]:
    """A comma- or semicolon-separated list, normalised to lower case; `each` checks an item."""

    def parse(value: str) -> frozenset[str]:
        found = [item.strip().lower() for item in re.split(r"[,;]", value) if item.strip()]
        wrong = []
        for item in found:
            try:
                if each is not None:
                    each(item)
            except Invalid as problem:
                wrong.append(str(problem))
        if wrong:
            raise Invalid("; ".join(wrong))
        return frozenset(found)

    return parse


def resource_group_entry(value: str) -> str:
    subscription, _, group = value.partition("/")
    if not _GUID.match(subscription) or not _RESOURCE_GROUP.match(group):
        raise Invalid(f"{value!r} is not 'subscriptionId/resourceGroup'")
    return value


def tag_pair(value: str) -> tuple[str, str]:
    name, separator, tag_value = value.partition("=")
    if not separator or not name.strip() or not tag_value.strip():
        raise Invalid(f"expected 'name=value', got {value!r}")
    return name.strip().lower(), tag_value.strip().lower()


def tag_name(value: str) -> str | None:
    if len(value) > 512 or any(character in value for character in "<>%&\\?/"):
        raise Invalid(f"{value!r} is not a valid Azure tag name")
    return value


def attribute_number(value: str) -> int | None:
    digits = value.lower().removeprefix("extensionattribute")
    if not (digits.isdigit() and 1 <= int(digits) <= 15):
        raise Invalid(f"expected 1-15 or extensionAttribute1-15, got {value!r}")
    return int(digits)


def ncrontab(value: str) -> str:
    if len(value.split()) != 6:
        raise Invalid(f"{value!r} is not a six-field NCRONTAB expression")
    return value


def cloud(value: str) -> Cloud:
    found = CLOUDS.get(value.lower())
    if found is None:
        known = ", ".join(sorted(c.name for c in CLOUDS.values()))
        raise Invalid(f"{value!r} is not a cloud this app knows ({known}; Bicep: environment().name)")
    return found


def existing_file(value: str) -> str | None:
    if not os.path.isfile(value):
        raise Invalid(f"{value!r} is not a readable file")
    return value


def connection_string(value: str) -> str | None:
    if "=" not in value:
        raise Invalid("not a storage connection string")
    return value


# --- the declarations -------------------------------------------------------------

# Storage: the same settings the Functions host uses for AzureWebJobsStorage,
# so one identity-based connection serves the host, the queues and the ledger.
_connection = declare(
    "AzureWebJobsStorage", None, connection_string, "a connection string carries a key: local emulator only"
)
_account = declare("AzureWebJobsStorage__accountName", None, optional_text)
_table_uri = declare("AzureWebJobsStorage__tableServiceUri", None, optional_https_url, "derived from the account name")
_queue_uri = declare("AzureWebJobsStorage__queueServiceUri", None, optional_https_url, "derived from the account name")
_blob_uri = declare("AzureWebJobsStorage__blobServiceUri", None, optional_https_url, "derived from the account name")
_storage_client = declare("AzureWebJobsStorage__clientId", None, guid("a client id"))
_mode = declare("RESPONDER_MODE", Mode.AUDIT, mode)
_ledger_table = declare("RESPONDER_LEDGER_TABLE", "vmledger", named(_TABLE_NAME, "table name (3-63 letters, digits)"))
_allowed_subscriptions = declare("RESPONDER_ALLOWED_SUBSCRIPTIONS", frozenset[str](), items(guid("a subscription id")))
_allowed_groups = declare("RESPONDER_ALLOWED_RESOURCE_GROUPS", frozenset[str](), items(resource_group_entry))
_opt_out = declare("RESPONDER_OPT_OUT_TAG", ("intune-responder", "ignore"), tag_pair)
_cloud = declare("RESPONDER_CLOUD", PUBLIC, cloud)
_graph_url = declare(
    "RESPONDER_GRAPH_URL",
    None,
    optional_https_url,
    "derived from RESPONDER_CLOUD; the local simulators (or a DoD Graph) set it",
)
_arm_url = declare(
    "RESPONDER_ARM_URL", None, optional_https_url, "derived from RESPONDER_CLOUD; the local simulators set it"
)
_ca_file = declare("RESPONDER_CA_FILE", None, existing_file, "only the local simulators' throw-away CA")
# The client id of the user-assigned managed identity used for Graph and ARM;
# DefaultAzureCredential reads the same standard variable.
_identity_client = declare("AZURE_CLIENT_ID", None, guid("a client id"))
# Set by the platform (Azure Functions; the local simulators' identity endpoint) where a managed identity is offered.
_identity_endpoint = declare(
    "IDENTITY_ENDPOINT", None, optional_text, "set by the Functions platform where a managed identity is offered"
)
_suppression_group = declare("RESPONDER_SUPPRESSION_GROUP_ID", None, guid("a group object id"))
_suppression_attribute = declare("RESPONDER_SUPPRESSION_ATTRIBUTE", None, attribute_number)
_suppress_on_power_off = declare("RESPONDER_SUPPRESS_ON_POWER_OFF", False, boolean)
_cleanup_queue = declare("RESPONDER_CLEANUP_QUEUE", "vm-cleanup", named(_QUEUE_NAME, "queue name (3-56 a-z, 0-9, -)"))
_dead_letters = declare("RESPONDER_DEAD_LETTER_CONTAINER", "deadletter", named(_CONTAINER_NAME, "blob container name"))
# A quick re-create with the same name is not an orphan.
_cleanup_delay = declare("RESPONDER_CLEANUP_DELAY_SECONDS", 3600, whole_number(0, MAX_QUEUE_DELAY_SECONDS, "seconds"))
_audit_table = declare("RESPONDER_AUDIT_TABLE", "responderaudit", named(_TABLE_NAME, "table name"))
# Records deleted per rolling hour, all instances together.
_max_deletions = declare("RESPONDER_MAX_DELETIONS_PER_HOUR", 50, whole_number(1))
_check_queue = declare(
    "RESPONDER_DEVICE_CHECK_QUEUE", "vm-device-check", named(_QUEUE_NAME, "queue name (3-56 a-z, 0-9, -)")
)
# A new VM's device enrols minutes after the VM is created.
_check_first_delay = declare(
    "RESPONDER_DEVICE_CHECK_FIRST_DELAY_SECONDS", 900, whole_number(1, MAX_QUEUE_DELAY_SECONDS, "seconds")
)
# Then, with no device, it is reported as not enrolled; a week at most (the follow-up rides the queue's delay).
_check_wait = declare("RESPONDER_DEVICE_CHECK_WAIT_HOURS", 24, whole_number(1, 7 * 24, "hours"))
# Entra fills dynamic device groups in minutes to hours after a device appears: a found device is looked at
# again this long after, for the profiles its groups bring (0: no second look). A week at most (the queue's delay).
_check_settle = declare("RESPONDER_DEVICE_CHECK_SETTLE_HOURS", 4, whole_number(0, 7 * 24, "hours"))
_watched = declare("RESPONDER_WATCHED_SUBSCRIPTIONS", frozenset[str](), items(guid("a subscription id")))
_schedule = declare("RESPONDER_RECONCILE_SCHEDULE", "0 30 3 * * *", ncrontab)  # daily, 03:30 UTC
_max_items = declare("RESPONDER_RECONCILE_MAX_ITEMS", 500, whole_number(1))
_stale_days = declare("RESPONDER_RECONCILE_STALE_DAYS", 30, whole_number(1))
_findings_topic = declare("RESPONDER_FINDINGS_TOPIC_ENDPOINT", None, optional_https_url)
_entra_ds_domains = declare("RESPONDER_ENTRA_DS_DOMAINS", frozenset[str](), items())
_findings_tag = declare("RESPONDER_FINDINGS_TAG", None, tag_name)
# A session host whose tag and extension don't lead to its pool is found in a walk of the subscription's host
# pools, which serves this long before a miss walks again (per instance); a day at most.
_host_pool_index = declare(
    "RESPONDER_HOST_POOL_INDEX_MINUTES",
    15,
    whole_number(1, 24 * 60, "minutes"),
    "the default suits: each instance walks a subscription's host pools at most once per 15 minutes",
)

# The names other modules and the tests refer to.
STORAGE_CONNECTION_STRING = _connection.name
MODE = _mode.name
LEDGER_TABLE = _ledger_table.name
SUPPRESSION_GROUP_ID = _suppression_group.name
SUPPRESSION_ATTRIBUTE = _suppression_attribute.name
CLEANUP_DELAY_SECONDS = _cleanup_delay.name
DEVICE_CHECK_FIRST_DELAY_SECONDS = _check_first_delay.name
WATCHED_SUBSCRIPTIONS = _watched.name

SETTING_NAMES: tuple[str, ...] = tuple(setting.name for setting in DECLARED)
# Read by the settings object but deliberately not set by the Bicep template (tests/test_infra.py).
NOT_DEPLOYED: dict[str, str] = {setting.name: setting.not_deployed for setting in DECLARED if setting.not_deployed}


# --- the typed object ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where the ledger and queues live: a connection string (Azurite, local
    development) or service URIs reached with the managed identity."""

    connection_string: str | None = None
    table_service_uri: str | None = None
    queue_service_uri: str | None = None
    blob_service_uri: str | None = None  # Event Grid's dead letters; optional
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class SuppressionSettings:
    """How a deallocated VM's device is marked (design §4); either, both, or neither."""

    group_id: str | None = None  # Entra group excluded from compliance policy and CA assignments
    attribute: int | None = None  # extensionAttribute<N> of the Entra device, for device filters
    on_power_off: bool = _suppress_on_power_off.default  # a stopped-but-allocated VM cannot check in either

    @property
    def configured(self) -> bool:
        return self.group_id is not None or self.attribute is not None


@dataclass(frozen=True, slots=True)
class CleanupSettings:
    queue: str = _cleanup_queue.default
    dead_letter_container: str = _dead_letters.default  # where Event Grid parks undeliverable events
    delay_seconds: int = _cleanup_delay.default
    audit_table: str = _audit_table.default
    max_deletions_per_hour: int = _max_deletions.default

    @property
    def poison_queue(self) -> str:
        """The name the Functions host also uses for messages it gives up on."""
        return f"{self.queue}-poison"


@dataclass(frozen=True, slots=True)
class DeviceCheckSettings:
    """The follow-up check of a new VM's device once it enrols: first look, then back off, then give up."""

    queue: str = _check_queue.default
    first_delay_seconds: int = _check_first_delay.default
    wait_hours: int = _check_wait.default
    settle_hours: int = _check_settle.default  # the second look at a found device, once its groups can have settled

    @property
    def poison_queue(self) -> str:
        return f"{self.queue}-poison"


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    """The timer that catches what events missed (design §6)."""

    watched_subscriptions: frozenset[str] = frozenset()
    schedule: str = _schedule.default  # NCRONTAB, read by the host's timer binding too
    max_items: int = _max_items.default  # VMs and devices looked at per run; the next run resumes
    stale_days: int = _stale_days.default  # an Intune VM record this long silent, with no VM, is an orphan


@dataclass(frozen=True, slots=True)
class Settings:
    storage: StorageSettings
    mode: Mode = _mode.default
    ledger_table: str = _ledger_table.default
    allowed_subscriptions: frozenset[str] = frozenset()  # empty: all watched subscriptions
    allowed_resource_groups: frozenset[str] = frozenset()  # "subscriptionId/resourceGroup"
    opt_out_tag: tuple[str, str] = _opt_out.default
    graph_url: str = f"{PUBLIC.graph}/v1.0"
    arm_url: str = PUBLIC.arm
    cloud: Cloud = _cloud.default
    ca_file: str | None = None  # PEM bundle to verify Graph/ARM TLS with (local simulators)
    identity_client_id: str | None = None
    managed_identity: bool = False  # the platform offers one (IDENTITY_ENDPOINT): use it, and nothing else
    suppression: SuppressionSettings = field(default_factory=SuppressionSettings)
    cleanup: CleanupSettings = field(default_factory=CleanupSettings)
    device_check: DeviceCheckSettings = field(default_factory=DeviceCheckSettings)
    findings_topic_endpoint: str | None = None  # Event Grid topic for prerequisite findings; off when unset
    entra_ds_domains: frozenset[str] = frozenset()  # Entra Domain Services domains (Intune can't manage)
    findings_tag: str | None = None  # tag name for the check's verdict on the VM; off when unset
    host_pool_index_minutes: int = _host_pool_index.default  # how long a walk of the host pools serves lookups
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate; raises SettingsError naming every bad setting."""
        problems: list[str] = []

        def read(setting: Setting[T]) -> T:
            return setting.read(env, problems)

        chosen_cloud = read(_cloud)
        settings = cls(
            storage=_storage(read, problems, chosen_cloud),
            mode=read(_mode),
            ledger_table=read(_ledger_table),
            allowed_subscriptions=read(_allowed_subscriptions),
            allowed_resource_groups=read(_allowed_groups),
            opt_out_tag=read(_opt_out),
            graph_url=read(_graph_url) or f"{chosen_cloud.graph}/v1.0",
            arm_url=read(_arm_url) or chosen_cloud.arm,
            cloud=chosen_cloud,
            ca_file=read(_ca_file),
            identity_client_id=read(_identity_client),
            managed_identity=read(_identity_endpoint) is not None,
            suppression=SuppressionSettings(
                group_id=read(_suppression_group),
                attribute=read(_suppression_attribute),
                on_power_off=read(_suppress_on_power_off),
            ),
            cleanup=CleanupSettings(
                queue=read(_cleanup_queue),
                dead_letter_container=read(_dead_letters),
                delay_seconds=read(_cleanup_delay),
                audit_table=read(_audit_table),
                max_deletions_per_hour=read(_max_deletions),
            ),
            device_check=DeviceCheckSettings(
                queue=read(_check_queue),
                first_delay_seconds=read(_check_first_delay),
                wait_hours=read(_check_wait),
                settle_hours=read(_check_settle),
            ),
            findings_topic_endpoint=read(_findings_topic),
            entra_ds_domains=read(_entra_ds_domains),
            findings_tag=read(_findings_tag),
            host_pool_index_minutes=read(_host_pool_index),
            reconcile=ReconcileSettings(
                watched_subscriptions=read(_watched),
                schedule=read(_schedule),
                max_items=read(_max_items),
                stale_days=read(_stale_days),
            ),
        )
        checks = settings.device_check
        if checks.first_delay_seconds > checks.wait_hours * 3600:
            problems.append(
                f"{_check_first_delay.name}: the first look ({checks.first_delay_seconds} s) comes after "
                f"{_check_wait.name} ({checks.wait_hours} h) is over"
            )
        if problems:
            raise SettingsError(problems)
        return settings


def _storage(read: Callable[[Setting[str | None]], str | None], problems: list[str], chosen: Cloud) -> StorageSettings:
    """A connection string (Azurite only), or the service endpoints with the managed identity."""
    connection = read(_connection)
    if connection:
        return StorageSettings(connection_string=connection)
    account, known_problems = read(_account), len(problems)
    table_uri, queue_uri, blob_uri = read(_table_uri), read(_queue_uri), read(_blob_uri)
    if len(problems) > known_problems:  # an endpoint was given, and is wrong: that problem says it all
        return StorageSettings()
    if account:
        table_uri = table_uri or f"https://{account}.table.{chosen.storage_suffix}"
        queue_uri = queue_uri or f"https://{account}.queue.{chosen.storage_suffix}"
        blob_uri = blob_uri or f"https://{account}.blob.{chosen.storage_suffix}"
    if not table_uri or not queue_uri:
        problems.append(
            f"storage: set {_account.name} (managed identity), or {_table_uri.name} and {_queue_uri.name}, "
            f"or {_connection.name} (local emulator only)"
        )
        return StorageSettings()
    return StorageSettings(
        table_service_uri=table_uri,
        queue_service_uri=queue_uri,
        blob_service_uri=blob_uri,
        client_id=read(_storage_client),
    )
