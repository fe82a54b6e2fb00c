"""Whether the process environment can change an HTTP request: proxy variables or a netrc file.

aiohttp, told to trust the environment (azure-core's default), looks for both on every request:
a scan of the environment and, in a worker thread, an attempt to read `~/.netrc`. Where neither
exists (a Functions host, as a rule) that is a thread hop per call that changes nothing, so the
clients are built not to look; where either exists they honour it, as before.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

# What aiohttp (and azure-core through it) reads when it trusts the environment, in any case.
_VARIABLES = frozenset({"http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy", "no_proxy", "netrc"})


@functools.cache
def environment_matters() -> bool:
    """True when a proxy variable or a netrc file exists; read once per process."""
    if any(name.lower() in _VARIABLES for name in os.environ):
        return True
    try:
        return (Path.home() / ".netrc").is_file()
    except (RuntimeError, OSError):  # no home directory: no netrc file either
        return False
