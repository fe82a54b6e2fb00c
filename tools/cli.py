"""`python -m tools`: the responder's tools for a person at a terminal.

Commands: `classify` (parse deliveries), `check-vm` (the enrolment prerequisite
rules on a VM document), `replay` (run deliveries through the real handler
functions), `reconcile` (one reconciliation pass, with a report of what it and its
orphan sweep decided), `send` (post one to a Functions host, as Event Grid does).
Exit codes: 0 success, 1 `check-vm` found an error, the host refused a `send`, or a
`reconcile` could not finish (Azure, Graph or storage failed; the message says which),
2 unreadable or malformed input or settings (a clear message, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from responder.decisions.events import IntakeError, parse_payload

if TYPE_CHECKING:
    from tools.reconcile import PassReport

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser(
        "classify",
        help="parse an Event Grid delivery (one event or a batch, either schema) "
        "and print each event's classification as a JSON line",
    )
    classify.add_argument("file", type=Path, help="a JSON file as Event Grid would deliver it")
    replay = commands.add_parser(
        "replay",
        help="run deliveries through the real handler functions with this process's app settings "
        "(against Azure with DefaultAzureCredential, or local emulators)",
    )
    replay.add_argument("files", nargs="+", type=Path, help="JSON files as Event Grid would deliver them")
    replay.add_argument("--enforce", action="store_true", help="carry the plan out (default: audit)")
    replay.add_argument("--json", action="store_true", help="one JSON line per event")
    reconcile = commands.add_parser(
        "reconcile",
        help="run one reconciliation pass with this process's app settings (against Azure with "
        "DefaultAzureCredential, or local emulators) and report what it and its orphan sweep decided; "
        "in audit mode the sweep's cleanups are decided here, deleting nothing",
    )
    reconcile.add_argument("--enforce", action="store_true", help="carry the plan out (default: the settings' mode)")
    reconcile.add_argument("--json", action="store_true", help="one JSON object instead of the report")
    check_vm = commands.add_parser(
        "check-vm",
        help="run the Intune enrolment prerequisite rules on an ARM virtual machine document "
        "(GET .../virtualMachines/NAME?$expand=instanceView); exit 1 when a rule finds an error",
    )
    check_vm.add_argument("file", type=Path, help="the VM document (JSON)")
    check_vm.add_argument("--host-pool", type=Path, help="the AVD host pool document the VM is a session host of")
    check_vm.add_argument("--image-definition", type=Path, help="the gallery image definition it was created from")
    send = commands.add_parser(
        "send", help="post a delivery to a Functions host the way Event Grid does (Core Tools loop)"
    )
    send.add_argument("file", type=Path, help="a JSON file as Event Grid would deliver it")
    send.add_argument("--function", required=True, help="the function name, e.g. on_vm_power_changed")
    send.add_argument("--url", default="http://localhost:7071", help="the host (default: Core Tools)")
    args = parser.parse_args(argv)
    if args.command == "replay":
        return _replay(args.files, out, err, enforce=args.enforce, as_json=args.json)
    if args.command == "reconcile":
        return _reconcile(out, err, enforce=args.enforce, as_json=args.json)
    if args.command == "check-vm":
        return _check_vm(args.file, args.host_pool, args.image_definition, out, err)
    if args.command == "send":
        return _send(args.file, args.function, args.url, out, err)
    return _classify(args.file, out, err)


def _replay(files: Sequence[Path], out: TextIO, err: TextIO, *, enforce: bool, as_json: bool) -> int:
    import asyncio
    import os

    from responder.decisions.settings import MODE, SettingsError

    try:
        deliveries = [(path.name, path.read_bytes()) for path in files]
    except OSError as error:
        print(f"error: cannot read {error.filename}: {error.strerror}", file=err)
        return EXIT_BAD_INPUT
    if enforce:
        os.environ[MODE] = "enforce"
    try:
        rows = asyncio.run(_replay_rows(deliveries))
    except SettingsError as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    for row in rows:
        if as_json:
            print(json.dumps(row.to_json(), sort_keys=True), file=out)
        else:
            print(
                f"{row.source}\t{row.function or '-'}\t{row.outcome}\t{row.resource_id or '-'}\t{row.reason}",
                file=out,
            )
    return EXIT_OK


async def _replay_rows(deliveries: list[tuple[str, bytes]]) -> list[Any]:
    from responder.composition import close_services
    from tools.replay import replay
    from tools.routes import event_grid_routes

    try:
        return await replay(deliveries, event_grid_routes())
    finally:
        await close_services()


_YOUR_IDENTITY = (
    "note: from a terminal the identity is yours (what DefaultAzureCredential found, e.g. az login): "
    "it needs the roles the README's Permissions section lists for the app's identity"
)


def _reconcile(out: TextIO, err: TextIO, *, enforce: bool, as_json: bool) -> int:
    import asyncio
    import os

    from azure.core.exceptions import AzureError

    from responder.decisions.errors import AccessDenied, RequestRefused, TransientError
    from responder.decisions.settings import MODE, Settings, SettingsError
    from tools.reconcile import report_lines

    if enforce:
        os.environ[MODE] = "enforce"
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    if not settings.reconcile.watched_subscriptions:
        print(
            "error: RESPONDER_WATCHED_SUBSCRIPTIONS is not set: a pass would read no VM, and every silent Intune VM "
            "record would look orphaned. Set it to the subscription ids the app watches (comma-separated), as the "
            "Function App's configuration has it",
            file=err,
        )
        return EXIT_BAD_INPUT
    try:
        report = asyncio.run(_reconcile_report())
    except SettingsError as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    except (TransientError, RequestRefused, AzureError, OSError) as error:
        print(f"error: the reconciliation pass stopped: {error}", file=err)
        if isinstance(error, AccessDenied) and not settings.managed_identity:
            print(_YOUR_IDENTITY, file=err)
        return EXIT_FAILED
    if as_json:
        print(json.dumps(report.to_json(), sort_keys=True), file=out)
    else:
        print("\n".join(report_lines(report)), file=out)
    if report.summary.failed:
        print(
            f"error: the reconciliation pass could not do {report.summary.failed} step(s); "
            f"the first: {report.summary.first_failure}",
            file=err,
        )
        if not settings.managed_identity:
            print(_YOUR_IDENTITY, file=err)
        return EXIT_FAILED
    if report.failed:
        print("error: a cleanup of the orphan sweep could not be decided (its reason says why)", file=err)
        return EXIT_FAILED
    return EXIT_OK


async def _reconcile_report() -> PassReport:
    from responder.composition import close_services, get_services
    from tools.reconcile import reconcile_by_hand

    try:
        return await reconcile_by_hand(await get_services())
    finally:
        await close_services()


def _check_vm(path: Path, host_pool: Path | None, image: Path | None, out: TextIO, err: TextIO) -> int:
    from responder.decisions import arm_documents
    from responder.decisions.prerequisites import CheckFacts, check, has_errors

    try:
        vm_document = _read_json(path)
        facts = CheckFacts(
            vm=arm_documents.vm_facts(vm_document),
            host_pool=arm_documents.host_pool(_read_json(host_pool)) if host_pool else None,
            image_definition=arm_documents.image_definition(_read_json(image)) if image else None,
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    findings = check(facts)
    print(
        json.dumps(
            {
                "resource_id": facts.vm.ref.resource_id,
                "findings": [
                    {
                        "rule_id": finding.rule_id,
                        "severity": finding.severity,
                        "message": finding.message,
                        "evidence": finding.evidence,
                        "doc": finding.doc,
                    }
                    for finding in findings
                ],
            },
            indent=2,
        ),
        file=out,
    )
    return EXIT_FAILED if has_errors(findings) else EXIT_OK


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except OSError as error:
        raise OSError(f"cannot read {path}: {error.strerror}") from error
    except ValueError as error:
        raise ValueError(f"{path} is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a JSON object")
    return document


def _send(path: Path, function: str, url: str, out: TextIO, err: TextIO) -> int:
    """POST to /runtime/webhooks/EventGrid?functionName=NAME with `aeg-event-type: Notification`."""
    import httpx

    try:
        document = json.loads(path.read_bytes())
    except OSError as error:
        print(f"error: cannot read {path}: {error.strerror}", file=err)
        return EXIT_BAD_INPUT
    except ValueError as error:
        print(f"error: {path} is not JSON: {error}", file=err)
        return EXIT_BAD_INPUT
    first = document[0] if isinstance(document, list) and document else document
    if isinstance(first, dict) and "specversion" in first:
        content_type = (
            "application/cloudevents-batch+json" if isinstance(document, list) else "application/cloudevents+json"
        )
        body = document
    else:
        content_type = "application/json"
        body = document if isinstance(document, list) else [document]  # Event Grid schema: always an array
    endpoint = f"{url.rstrip('/')}/runtime/webhooks/EventGrid"
    try:
        response = httpx.post(
            endpoint,
            params={"functionName": function},
            headers={"aeg-event-type": "Notification", "Content-Type": content_type},
            content=json.dumps(body).encode(),
            timeout=30,
        )
    except httpx.HTTPError as error:
        print(f"error: could not reach {endpoint}: {error}", file=err)
        return EXIT_FAILED
    print(f"{response.status_code} {response.reason_phrase} from {endpoint}?functionName={function}", file=out)
    return EXIT_OK if response.is_success else EXIT_FAILED


def _classify(path: Path, out: TextIO, err: TextIO) -> int:
    try:
        payload = path.read_bytes()
    except OSError as error:
        print(f"error: cannot read {path}: {error.strerror}", file=err)
        return EXIT_BAD_INPUT
    status = EXIT_OK
    for result in parse_payload(payload):
        if isinstance(result, IntakeError):
            where = f" (event {result.event_id})" if result.event_id else ""
            at = f" at index {result.index}" if result.index is not None else ""
            print(f"error: {path}{at}{where}: {result.message}", file=err)
            status = EXIT_BAD_INPUT
            continue
        print(json.dumps(result.to_json(), sort_keys=True), file=out)
    return status
