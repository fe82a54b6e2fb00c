"""`python -m responder`: the responder's tools for a person at a terminal.

Exit codes: 0 success, 2 unreadable or malformed input (SPEC: a clear message,
never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from responder.events import IntakeError, parse_payload

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="python -m responder", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser(
        "classify",
        help="parse an Event Grid delivery (one event or a batch, either schema) "
        "and print each event's classification as a JSON line",
    )
    classify.add_argument("file", type=Path, help="a JSON file as Event Grid would deliver it")
    args = parser.parse_args(argv)
    return _classify(args.file, out, err)


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
