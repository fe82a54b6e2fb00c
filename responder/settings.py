"""The app settings the responder reads, as one typed, validated object.

Every name the code reads is in `SETTING_NAMES`, so the Bicep template can be
checked against it (issue: deployment). Validation collects every problem and
names each bad setting, so one failed start tells the admin all there is to fix.
Settings are read on first use, never at import: an exception while the host
indexes `function_app.py` would leave the app with zero functions (design §10).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from responder.clouds import CLOUDS, PUBLIC, Cloud

_Reader = Callable[[str], "str | None"]


class Mode(StrEnum):
    AUDIT = "audit"  # decide and record every action, perform none
    ENFORCE = "enforce"


# Storage: the same settings the Functions host uses for AzureWebJobsStorage,
# so one identity-based connection serves the host, the queues and the ledger.
STORAGE_CONNECTION_STRING = "AzureWebJobsStorage"
STORAGE_ACCOUNT_NAME = "AzureWebJobsStorage__accountName"
STORAGE_TABLE_URI = "AzureWebJobsStorage__tableServiceUri"
STORAGE_QUEUE_URI = "AzureWebJobsStorage__queueServiceUri"
STORAGE_BLOB_URI = "AzureWebJobsStorage__blobServiceUri"
STORAGE_CLIENT_ID = "AzureWebJobsStorage__clientId"

MODE = "RESPONDER_MODE"
LEDGER_TABLE = "RESPONDER_LEDGER_TABLE"
ALLOWED_SUBSCRIPTIONS = "RESPONDER_ALLOWED_SUBSCRIPTIONS"
ALLOWED_RESOURCE_GROUPS = "RESPONDER_ALLOWED_RESOURCE_GROUPS"
OPT_OUT_TAG = "RESPONDER_OPT_OUT_TAG"
CLOUD = "RESPONDER_CLOUD"
GRAPH_URL = "RESPONDER_GRAPH_URL"
ARM_URL = "RESPONDER_ARM_URL"
CA_FILE = "RESPONDER_CA_FILE"
WATCHED_SUBSCRIPTIONS = "RESPONDER_WATCHED_SUBSCRIPTIONS"
RECONCILE_SCHEDULE = "RESPONDER_RECONCILE_SCHEDULE"
RECONCILE_MAX_ITEMS = "RESPONDER_RECONCILE_MAX_ITEMS"
RECONCILE_STALE_DAYS = "RESPONDER_RECONCILE_STALE_DAYS"
FINDINGS_TOPIC_ENDPOINT = "RESPONDER_FINDINGS_TOPIC_ENDPOINT"
ENTRA_DS_DOMAINS = "RESPONDER_ENTRA_DS_DOMAINS"
FINDINGS_TAG = "RESPONDER_FINDINGS_TAG"
CLEANUP_QUEUE = "RESPONDER_CLEANUP_QUEUE"
DEAD_LETTER_CONTAINER = "RESPONDER_DEAD_LETTER_CONTAINER"
CLEANUP_DELAY_SECONDS = "RESPONDER_CLEANUP_DELAY_SECONDS"
AUDIT_TABLE = "RESPONDER_AUDIT_TABLE"
MAX_DELETIONS_PER_HOUR = "RESPONDER_MAX_DELETIONS_PER_HOUR"
DEVICE_CHECK_QUEUE = "RESPONDER_DEVICE_CHECK_QUEUE"
DEVICE_CHECK_FIRST_DELAY_SECONDS = "RESPONDER_DEVICE_CHECK_FIRST_DELAY_SECONDS"
DEVICE_CHECK_WAIT_HOURS = "RESPONDER_DEVICE_CHECK_WAIT_HOURS"
SUPPRESSION_GROUP_ID = "RESPONDER_SUPPRESSION_GROUP_ID"
SUPPRESSION_ATTRIBUTE = "RESPONDER_SUPPRESSION_ATTRIBUTE"
SUPPRESS_ON_POWER_OFF = "RESPONDER_SUPPRESS_ON_POWER_OFF"
# The client id of the user-assigned managed identity used for Graph and ARM;
# DefaultAzureCredential reads the same standard variable.
IDENTITY_CLIENT_ID = "AZURE_CLIENT_ID"
# Set by the platform (Azure Functions; the local simulators' identity endpoint) where a managed identity is offered.
IDENTITY_ENDPOINT = "IDENTITY_ENDPOINT"

SETTING_NAMES: tuple[str, ...] = (
    STORAGE_CONNECTION_STRING,
    STORAGE_ACCOUNT_NAME,
    STORAGE_TABLE_URI,
    STORAGE_QUEUE_URI,
    STORAGE_BLOB_URI,
    STORAGE_CLIENT_ID,
    MODE,
    LEDGER_TABLE,
    ALLOWED_SUBSCRIPTIONS,
    ALLOWED_RESOURCE_GROUPS,
    OPT_OUT_TAG,
    CLOUD,
    GRAPH_URL,
    ARM_URL,
    CA_FILE,
    IDENTITY_CLIENT_ID,
    IDENTITY_ENDPOINT,
    SUPPRESSION_GROUP_ID,
    SUPPRESSION_ATTRIBUTE,
    SUPPRESS_ON_POWER_OFF,
    CLEANUP_QUEUE,
    DEAD_LETTER_CONTAINER,
    CLEANUP_DELAY_SECONDS,
    AUDIT_TABLE,
    MAX_DELETIONS_PER_HOUR,
    DEVICE_CHECK_QUEUE,
    DEVICE_CHECK_FIRST_DELAY_SECONDS,
    DEVICE_CHECK_WAIT_HOURS,
    WATCHED_SUBSCRIPTIONS,
    RECONCILE_SCHEDULE,
    RECONCILE_MAX_ITEMS,
    RECONCILE_STALE_DAYS,
    FINDINGS_TOPIC_ENDPOINT,
    ENTRA_DS_DOMAINS,
    FINDINGS_TAG,
)

# Read by the settings object but deliberately not set by the Bicep template (tests/test_infra.py).
NOT_DEPLOYED: dict[str, str] = {
    STORAGE_CONNECTION_STRING: "a connection string carries a key: local emulator only",
    STORAGE_TABLE_URI: "derived from the account name",
    STORAGE_QUEUE_URI: "derived from the account name",
    STORAGE_BLOB_URI: "derived from the account name",
    GRAPH_URL: "derived from RESPONDER_CLOUD; the local simulators (or a DoD Graph) set it",
    ARM_URL: "derived from RESPONDER_CLOUD; the local simulators set it",
    CA_FILE: "only the local simulators' throw-away CA",
    IDENTITY_ENDPOINT: "set by the Functions platform where a managed identity is offered",
}

DEFAULT_LEDGER_TABLE = "vmledger"
DEFAULT_OPT_OUT_TAG = "intune-responder=ignore"
DEFAULT_CLEANUP_QUEUE = "vm-cleanup"
DEFAULT_DEAD_LETTER_CONTAINER = "deadletter"
DEFAULT_CLEANUP_DELAY_SECONDS = 3600  # a quick re-create with the same name is not an orphan
MAX_QUEUE_DELAY_SECONDS = 7 * 24 * 3600  # Azure Storage queues' longest visibility delay
DEFAULT_AUDIT_TABLE = "responderaudit"
DEFAULT_RECONCILE_SCHEDULE = "0 30 3 * * *"  # daily, 03:30 UTC
DEFAULT_MAX_DELETIONS_PER_HOUR = 50  # records deleted per rolling hour, all instances together
DEFAULT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
DEFAULT_DEVICE_CHECK_QUEUE = "vm-device-check"
DEFAULT_DEVICE_CHECK_FIRST_DELAY_SECONDS = 900  # a new VM's device enrols minutes after the VM is created
DEFAULT_DEVICE_CHECK_WAIT_HOURS = 24  # then it is reported as not enrolled
DEFAULT_ARM_URL = "https://management.azure.com"

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")


class SettingsError(ValueError):
    """One or more app settings are missing or invalid; the message names each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid app settings: " + "; ".join(problems))


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
    on_power_off: bool = False  # a stopped-but-allocated VM cannot check in either

    @property
    def configured(self) -> bool:
        return self.group_id is not None or self.attribute is not None


@dataclass(frozen=True, slots=True)
class CleanupSettings:
    queue: str = DEFAULT_CLEANUP_QUEUE
    dead_letter_container: str = DEFAULT_DEAD_LETTER_CONTAINER  # where Event Grid parks undeliverable events
    delay_seconds: int = DEFAULT_CLEANUP_DELAY_SECONDS
    audit_table: str = DEFAULT_AUDIT_TABLE
    max_deletions_per_hour: int = DEFAULT_MAX_DELETIONS_PER_HOUR

    @property
    def poison_queue(self) -> str:
        """The name the Functions host also uses for messages it gives up on."""
        return f"{self.queue}-poison"


@dataclass(frozen=True, slots=True)
class DeviceCheckSettings:
    """The follow-up check of a new VM's device once it enrols: first look, then back off, then give up."""

    queue: str = DEFAULT_DEVICE_CHECK_QUEUE
    first_delay_seconds: int = DEFAULT_DEVICE_CHECK_FIRST_DELAY_SECONDS
    wait_hours: int = DEFAULT_DEVICE_CHECK_WAIT_HOURS

    @property
    def poison_queue(self) -> str:
        return f"{self.queue}-poison"


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    """The timer that catches what events missed (design §6)."""

    watched_subscriptions: frozenset[str] = frozenset()
    schedule: str = DEFAULT_RECONCILE_SCHEDULE  # NCRONTAB, read by the host's timer binding too
    max_items: int = 500  # VMs and devices looked at per run; the next run resumes
    stale_days: int = 30  # an Intune VM record this long silent, with no VM, is an orphan


@dataclass(frozen=True, slots=True)
class Settings:
    storage: StorageSettings
    mode: Mode = Mode.AUDIT
    ledger_table: str = DEFAULT_LEDGER_TABLE
    allowed_subscriptions: frozenset[str] = frozenset()  # empty: all watched subscriptions
    allowed_resource_groups: frozenset[str] = frozenset()  # "subscriptionId/resourceGroup"
    opt_out_tag: tuple[str, str] = ("intune-responder", "ignore")
    graph_url: str = DEFAULT_GRAPH_URL
    arm_url: str = DEFAULT_ARM_URL
    cloud: Cloud = PUBLIC
    ca_file: str | None = None  # PEM bundle to verify Graph/ARM TLS with (local simulators)
    identity_client_id: str | None = None
    managed_identity: bool = False  # the platform offers one (IDENTITY_ENDPOINT): use it, and nothing else
    suppression: SuppressionSettings = SuppressionSettings()
    cleanup: CleanupSettings = CleanupSettings()
    device_check: DeviceCheckSettings = DeviceCheckSettings()
    findings_topic_endpoint: str | None = None  # Event Grid topic for prerequisite findings; off when unset
    entra_ds_domains: frozenset[str] = frozenset()  # Entra Domain Services domains (Intune can't manage)
    findings_tag: str | None = None  # tag name for the check's verdict on the VM; off when unset
    reconcile: ReconcileSettings = ReconcileSettings()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate; raises SettingsError naming every bad setting."""
        problems: list[str] = []

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        raw_mode = (text(MODE) or Mode.AUDIT.value).lower()
        mode = Mode.AUDIT
        if raw_mode in Mode._value2member_map_:
            mode = Mode(raw_mode)
        else:
            problems.append(f"{MODE}: expected 'audit' or 'enforce', got {raw_mode!r}")

        cloud = _cloud_named(text(CLOUD), problems)
        storage = _storage(text, problems, cloud)

        ledger_table = text(LEDGER_TABLE) or DEFAULT_LEDGER_TABLE
        if not _TABLE_NAME.match(ledger_table):
            problems.append(
                f"{LEDGER_TABLE}: {ledger_table!r} is not a valid table name "
                "(3-63 letters and digits, starting with a letter)"
            )

        subscriptions = _items(text(ALLOWED_SUBSCRIPTIONS))
        for subscription in subscriptions:
            if not _GUID.match(subscription):
                problems.append(f"{ALLOWED_SUBSCRIPTIONS}: {subscription!r} is not a subscription id")

        resource_groups = _items(text(ALLOWED_RESOURCE_GROUPS))
        for entry in resource_groups:
            subscription, _, group = entry.partition("/")
            if not _GUID.match(subscription) or not _RESOURCE_GROUP.match(group):
                problems.append(f"{ALLOWED_RESOURCE_GROUPS}: {entry!r} is not 'subscriptionId/resourceGroup'")

        raw_tag = text(OPT_OUT_TAG) or DEFAULT_OPT_OUT_TAG
        tag_name, separator, tag_value = raw_tag.partition("=")
        if not separator or not tag_name.strip() or not tag_value.strip():
            problems.append(f"{OPT_OUT_TAG}: expected 'name=value', got {raw_tag!r}")

        graph_url, arm_url, ca_file, identity_client_id = _cloud(text, problems, cloud)
        suppression = _suppression(text, problems)
        cleanup = _cleanup(text, problems)
        device_check = _device_check(text, problems)
        reconcile = _reconcile(text, problems)
        topic = text(FINDINGS_TOPIC_ENDPOINT)
        if topic is not None and not topic.startswith("https://"):
            problems.append(f"{FINDINGS_TOPIC_ENDPOINT}: {topic!r} must be an https:// URL")

        if problems:
            raise SettingsError(problems)
        return cls(
            storage=storage,
            mode=mode,
            ledger_table=ledger_table,
            allowed_subscriptions=frozenset(subscriptions),
            allowed_resource_groups=frozenset(resource_groups),
            opt_out_tag=(tag_name.strip().lower(), tag_value.strip().lower()),
            graph_url=graph_url,
            arm_url=arm_url,
            cloud=cloud,
            ca_file=ca_file,
            identity_client_id=identity_client_id,
            managed_identity=text(IDENTITY_ENDPOINT) is not None,
            suppression=suppression,
            cleanup=cleanup,
            device_check=device_check,
            findings_topic_endpoint=topic,
            entra_ds_domains=frozenset(_items(text(ENTRA_DS_DOMAINS))),
            findings_tag=_tag_name(text(FINDINGS_TAG), problems),
            reconcile=reconcile,
        )


def _cloud_named(name: str | None, problems: list[str]) -> Cloud:
    if name is None:
        return PUBLIC
    cloud = CLOUDS.get(name.strip().lower())
    if cloud is None:
        known = ", ".join(sorted(c.name for c in CLOUDS.values()))
        problems.append(f"{CLOUD}: {name!r} is not a cloud this app knows ({known}; Bicep: environment().name)")
        return PUBLIC
    return cloud


def _storage(text: _Reader, problems: list[str], cloud: Cloud) -> StorageSettings:
    connection_string = text(STORAGE_CONNECTION_STRING)
    account = text(STORAGE_ACCOUNT_NAME)
    table_uri = text(STORAGE_TABLE_URI)
    queue_uri = text(STORAGE_QUEUE_URI)
    blob_uri = text(STORAGE_BLOB_URI)
    client_id = text(STORAGE_CLIENT_ID)
    if connection_string:
        if "=" not in connection_string:
            problems.append(f"{STORAGE_CONNECTION_STRING}: not a storage connection string")
        return StorageSettings(connection_string=connection_string)
    if account:
        table_uri = table_uri or f"https://{account}.table.{cloud.storage_suffix}"
        queue_uri = queue_uri or f"https://{account}.queue.{cloud.storage_suffix}"
        blob_uri = blob_uri or f"https://{account}.blob.{cloud.storage_suffix}"
    if not table_uri or not queue_uri:
        problems.append(
            f"storage: set {STORAGE_ACCOUNT_NAME} (managed identity), or "
            f"{STORAGE_TABLE_URI} and {STORAGE_QUEUE_URI}, or {STORAGE_CONNECTION_STRING} "
            "(local emulator only)"
        )
        return StorageSettings()
    for name, uri in ((STORAGE_TABLE_URI, table_uri), (STORAGE_QUEUE_URI, queue_uri), (STORAGE_BLOB_URI, blob_uri)):
        if uri and not uri.startswith("https://"):
            problems.append(f"{name}: {uri!r} must be an https:// URI (tokens are never sent in clear)")
    if client_id and not _GUID.match(client_id.lower()):
        problems.append(f"{STORAGE_CLIENT_ID}: {client_id!r} is not a client id (GUID)")
    return StorageSettings(
        table_service_uri=table_uri, queue_service_uri=queue_uri, blob_service_uri=blob_uri, client_id=client_id
    )


def _cloud(text: _Reader, problems: list[str], cloud: Cloud) -> tuple[str, str, str | None, str | None]:
    """Where Graph and ARM are, which CA to trust for them, and which identity calls them."""
    graph_url = (text(GRAPH_URL) or f"{cloud.graph}/v1.0").rstrip("/")
    arm_url = (text(ARM_URL) or cloud.arm).rstrip("/")
    for name, url in ((GRAPH_URL, graph_url), (ARM_URL, arm_url)):
        if not url.startswith("https://"):
            problems.append(f"{name}: {url!r} must be an https:// URL (tokens are never sent in clear)")
    ca_file = text(CA_FILE)
    if ca_file is not None and not os.path.isfile(ca_file):
        problems.append(f"{CA_FILE}: {ca_file!r} is not a readable file")
    identity_client_id = text(IDENTITY_CLIENT_ID)
    if identity_client_id is not None and not _GUID.match(identity_client_id.lower()):
        problems.append(f"{IDENTITY_CLIENT_ID}: {identity_client_id!r} is not a client id (GUID)")
    return graph_url, arm_url, ca_file, identity_client_id


def _suppression(text: _Reader, problems: list[str]) -> SuppressionSettings:
    group_id = text(SUPPRESSION_GROUP_ID)
    if group_id is not None and not _GUID.match(group_id.lower()):
        problems.append(f"{SUPPRESSION_GROUP_ID}: {group_id!r} is not a group object id (GUID)")
    raw_attribute = text(SUPPRESSION_ATTRIBUTE)
    attribute: int | None = None
    if raw_attribute is not None:
        digits = raw_attribute.lower().removeprefix("extensionattribute")
        if digits.isdigit() and 1 <= int(digits) <= 15:
            attribute = int(digits)
        else:
            problems.append(f"{SUPPRESSION_ATTRIBUTE}: expected 1-15 or extensionAttribute1-15, got {raw_attribute!r}")
    raw_power_off = (text(SUPPRESS_ON_POWER_OFF) or "false").lower()
    if raw_power_off not in {"true", "false"}:
        problems.append(f"{SUPPRESS_ON_POWER_OFF}: expected true or false, got {raw_power_off!r}")
    return SuppressionSettings(
        group_id=group_id.lower() if group_id else None,
        attribute=attribute,
        on_power_off=raw_power_off == "true",
    )


_CONTAINER_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,55}[a-z0-9]$")  # 63 minus "-poison"


def _cleanup(text: _Reader, problems: list[str]) -> CleanupSettings:
    queue = text(CLEANUP_QUEUE) or DEFAULT_CLEANUP_QUEUE
    if not _QUEUE_NAME.match(queue):
        problems.append(f"{CLEANUP_QUEUE}: {queue!r} is not a valid queue name (3-56 lower-case letters, digits, -)")
    raw_delay = text(CLEANUP_DELAY_SECONDS) or str(DEFAULT_CLEANUP_DELAY_SECONDS)
    delay = DEFAULT_CLEANUP_DELAY_SECONDS
    if raw_delay.isdigit() and int(raw_delay) <= MAX_QUEUE_DELAY_SECONDS:
        delay = int(raw_delay)
    else:
        problems.append(f"{CLEANUP_DELAY_SECONDS}: expected 0-{MAX_QUEUE_DELAY_SECONDS} seconds, got {raw_delay!r}")
    audit_table = text(AUDIT_TABLE) or DEFAULT_AUDIT_TABLE
    if not _TABLE_NAME.match(audit_table):
        problems.append(f"{AUDIT_TABLE}: {audit_table!r} is not a valid table name")
    raw_cap = text(MAX_DELETIONS_PER_HOUR) or str(DEFAULT_MAX_DELETIONS_PER_HOUR)
    cap = DEFAULT_MAX_DELETIONS_PER_HOUR
    if raw_cap.isdigit() and int(raw_cap) >= 1:
        cap = int(raw_cap)
    else:
        problems.append(f"{MAX_DELETIONS_PER_HOUR}: expected a whole number of at least 1, got {raw_cap!r}")
    container = text(DEAD_LETTER_CONTAINER) or DEFAULT_DEAD_LETTER_CONTAINER
    if not _CONTAINER_NAME.match(container):
        problems.append(f"{DEAD_LETTER_CONTAINER}: {container!r} is not a valid blob container name")
    return CleanupSettings(
        queue=queue,
        dead_letter_container=container,
        delay_seconds=delay,
        audit_table=audit_table,
        max_deletions_per_hour=cap,
    )


def _device_check(text: _Reader, problems: list[str]) -> DeviceCheckSettings:
    queue = text(DEVICE_CHECK_QUEUE) or DEFAULT_DEVICE_CHECK_QUEUE
    if not _QUEUE_NAME.match(queue):
        problems.append(f"{DEVICE_CHECK_QUEUE}: {queue!r} is not a valid queue name (3-56 lower-case, digits, -)")
    raw_delay = text(DEVICE_CHECK_FIRST_DELAY_SECONDS) or str(DEFAULT_DEVICE_CHECK_FIRST_DELAY_SECONDS)
    delay = DEFAULT_DEVICE_CHECK_FIRST_DELAY_SECONDS
    if raw_delay.isdigit() and 1 <= int(raw_delay) <= MAX_QUEUE_DELAY_SECONDS:
        delay = int(raw_delay)
    else:
        problems.append(
            f"{DEVICE_CHECK_FIRST_DELAY_SECONDS}: expected 1-{MAX_QUEUE_DELAY_SECONDS} seconds, got {raw_delay!r}"
        )
    raw_hours = text(DEVICE_CHECK_WAIT_HOURS) or str(DEFAULT_DEVICE_CHECK_WAIT_HOURS)
    hours = DEFAULT_DEVICE_CHECK_WAIT_HOURS
    if raw_hours.isdigit() and 1 <= int(raw_hours) <= MAX_DEVICE_CHECK_WAIT_HOURS:
        hours = int(raw_hours)
    else:
        problems.append(f"{DEVICE_CHECK_WAIT_HOURS}: expected 1-{MAX_DEVICE_CHECK_WAIT_HOURS} hours, got {raw_hours!r}")
    return DeviceCheckSettings(queue=queue, first_delay_seconds=delay, wait_hours=hours)


MAX_DEVICE_CHECK_WAIT_HOURS = 7 * 24  # a week: the follow-up rides the queue's visibility delay


def _reconcile(text: _Reader, problems: list[str]) -> ReconcileSettings:
    watched = _items(text(WATCHED_SUBSCRIPTIONS))
    for subscription in watched:
        if not _GUID.match(subscription):
            problems.append(f"{WATCHED_SUBSCRIPTIONS}: {subscription!r} is not a subscription id")
    numbers = {}
    for name, default in ((RECONCILE_MAX_ITEMS, 500), (RECONCILE_STALE_DAYS, 30)):
        raw = text(name) or str(default)
        numbers[name] = int(raw) if raw.isdigit() and int(raw) >= 1 else default
        if not (raw.isdigit() and int(raw) >= 1):
            problems.append(f"{name}: expected a whole number of at least 1, got {raw!r}")
    schedule = text(RECONCILE_SCHEDULE) or DEFAULT_RECONCILE_SCHEDULE
    if len(schedule.split()) != 6:
        problems.append(f"{RECONCILE_SCHEDULE}: {schedule!r} is not a six-field NCRONTAB expression")
    return ReconcileSettings(
        watched_subscriptions=frozenset(watched),
        schedule=schedule,
        max_items=numbers[RECONCILE_MAX_ITEMS],
        stale_days=numbers[RECONCILE_STALE_DAYS],
    )


def _tag_name(name: str | None, problems: list[str]) -> str | None:
    if name is not None and (len(name) > 512 or any(character in name for character in "<>%&\\?/")):
        problems.append(f"{FINDINGS_TAG}: {name!r} is not a valid Azure tag name")
    return name


def _items(value: str | None) -> list[str]:
    """A comma- or semicolon-separated list, normalised to lower case."""
    if not value:
        return []
    return [item.strip().lower() for item in re.split(r"[,;]", value) if item.strip()]
