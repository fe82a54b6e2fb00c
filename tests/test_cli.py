"""`python -m tools classify`: JSON lines out, exit 2 with a message on bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import EVENTS
from tools.cli import EXIT_BAD_INPUT, EXIT_OK, main

GOOD = sorted(path.name for path in EVENTS.glob("*.json") if not path.name.startswith("malformed-"))
MALFORMED = sorted(path.name for path in EVENTS.glob("malformed-*.json"))


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", [name for name in GOOD if name != "batch-mixed.json"])
def test_classify_prints_one_json_line_per_event(name: str) -> None:
    code, out, err = run("classify", str(EVENTS / name))

    document = json.loads((EVENTS / name).read_text())
    expected = len(document) if isinstance(document, list) else 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert (code, err) == (EXIT_OK, "")
    assert len(lines) == expected
    assert all(line["kind"] for line in lines)


@pytest.mark.parametrize("name", MALFORMED)
def test_classify_exits_2_with_a_message_on_a_malformed_event(name: str) -> None:
    code, out, err = run("classify", str(EVENTS / name))

    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert err.startswith("error: ")


def test_classify_prints_the_good_events_of_a_partly_malformed_batch() -> None:
    code, out, err = run("classify", str(EVENTS / "batch-mixed.json"))

    assert code == EXIT_BAD_INPUT
    assert len(out.splitlines()) == 2
    assert "at index 1" in err


def test_classify_exits_2_when_the_file_cannot_be_read(tmp_path: Path) -> None:
    code, _, err = run("classify", str(tmp_path / "missing.json"))

    assert code == EXIT_BAD_INPUT
    assert "cannot read" in err


def test_the_module_runs_as_a_program() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tools", "classify", str(EVENTS / "eventgrid-vm-start.json")],
        capture_output=True,
        text=True,
        check=False,
    )

    assert completed.returncode == EXIT_OK, completed.stderr
    assert json.loads(completed.stdout)["kind"] == "started"


class Receiver:
    """A local stand-in for the Functions host's Event Grid webhook."""

    def __init__(self, status: int = 202) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()
    running.server.server_close()


def test_send_posts_to_the_event_grid_webhook_as_a_notification(receiver: Receiver) -> None:
    code, out, _ = run(
        "send",
        str(EVENTS / "eventgrid-vm-deallocate.json"),
        "--function",
        "on_vm_power_changed",
        "--url",
        receiver.url,
    )

    ((path, headers, body),) = receiver.requests
    assert code == EXIT_OK
    assert path == "/runtime/webhooks/EventGrid?functionName=on_vm_power_changed"
    assert headers["aeg-event-type"] == "Notification"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == json.loads((EVENTS / "eventgrid-vm-deallocate.json").read_text())
    assert out.startswith("202 ")


def test_send_wraps_a_single_event_grid_event_in_an_array(receiver: Receiver, tmp_path: Path) -> None:
    single = tmp_path / "single.json"
    (event,) = json.loads((EVENTS / "eventgrid-vm-start.json").read_text())
    single.write_text(json.dumps(event))

    run("send", str(single), "--function", "on_vm_power_changed", "--url", receiver.url)

    assert json.loads(receiver.requests[0][2]) == [event]


def test_send_posts_a_cloudevent_with_its_content_type(receiver: Receiver) -> None:
    run(
        "send",
        str(EVENTS / "cloudevents-vm-start.json"),
        "--function",
        "on_vm_power_changed",
        "--url",
        receiver.url,
    )

    assert receiver.requests[0][1]["content-type"] == "application/cloudevents+json"


def test_send_fails_when_the_host_refuses() -> None:
    refusing = Receiver(status=500)
    try:
        code, _, _ = run("send", str(EVENTS / "eventgrid-vm-start.json"), "--function", "x", "--url", refusing.url)
    finally:
        refusing.server.shutdown()
        refusing.server.server_close()

    assert code == 1


def test_send_fails_clearly_when_no_host_listens() -> None:
    from localdev.azurite import free_port

    code, _, err = run(
        "send",
        str(EVENTS / "eventgrid-vm-start.json"),
        "--function",
        "x",
        "--url",
        f"http://127.0.0.1:{free_port()}",
    )

    assert code == 1
    assert "could not reach" in err


def test_replay_runs_deliveries_through_the_handlers(app_env: dict[str, str]) -> None:
    code, out, _ = run(
        "replay", str(EVENTS / "eventgrid-vm-write.json"), str(EVENTS / "eventgrid-vm-delete.json"), "--json"
    )

    rows = [json.loads(line) for line in out.splitlines()]
    assert code == EXIT_OK
    assert [(row["function"], row["outcome"]) for row in rows] == [
        ("on_vm_created", "recorded"),
        ("on_vm_deleted", "recorded"),
    ]


def test_replay_names_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("RESPONDER_MODE", "sometimes")

    code, _, err = run("replay", str(EVENTS / "eventgrid-vm-write.json"))

    assert code == EXIT_BAD_INPUT
    assert "RESPONDER_MODE" in err


VMS = Path(__file__).parent / "vms"


def check_vm(*argv: str) -> tuple[int, list[tuple[str, str]], str]:
    code, out, err = run("check-vm", *argv)
    findings = [(item["rule_id"], item["severity"]) for item in json.loads(out)["findings"]] if out else []
    return code, findings, err


def test_check_vm_passes_an_entra_joined_windows_11_enterprise_vm() -> None:
    assert check_vm(str(VMS / "vm-win11-01.json")) == (EXIT_OK, [], "")


def test_check_vm_fails_a_vm_made_from_a_specialized_image() -> None:
    code, findings, _ = check_vm(
        str(VMS / "vm-clone-05.json"), "--image-definition", str(VMS / "image-win11-golden-specialized.json")
    )

    assert (code, findings) == (1, [("cloned-image", "error")])


def test_check_vm_reports_a_pooled_multi_session_host() -> None:
    code, findings, _ = check_vm(str(VMS / "avd-pooled-01.json"), "--host-pool", str(VMS / "hp-pooled.json"))

    assert (code, findings) == (EXIT_OK, [("host-pool", "info")])


def test_check_vm_reports_an_ad_joined_windows_10_vm() -> None:
    assert check_vm(str(VMS / "vm-win10-02.json"))[:2] == (EXIT_OK, [("join", "info")])


def test_check_vm_calls_linux_not_applicable() -> None:
    assert check_vm(str(VMS / "vm-linux-08.json"))[:2] == (EXIT_OK, [("not-applicable", "info")])


def test_check_vm_exits_2_on_a_document_that_is_not_a_vm() -> None:
    code, _, err = check_vm(str(VMS / "hp-pooled.json"))

    assert code == EXIT_BAD_INPUT
    assert "not a virtual machine" in err


def test_check_vm_exits_2_on_a_missing_file(tmp_path: Path) -> None:
    code, _, err = check_vm(str(tmp_path / "nope.json"))

    assert code == EXIT_BAD_INPUT
    assert "cannot read" in err
