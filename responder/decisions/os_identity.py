"""Which Windows a VM runs, from its Marketplace image or what its guest agent reports. Pure.

Marketplace SKUs name the edition and the feature update (`win11-23h2-ent`,
`rs5-enterprise`, `19h1-evd`); a custom image leaves only the guest agent's
`osName`/`osVersion`, which an unstarted VM hasn't reported yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from responder.decisions.facts import VmFacts

# Windows 10 feature updates by Marketplace codename, and the build each shipped as.
WINDOWS_10_BUILDS = {
    "rs1": 14393,
    "rs2": 15063,
    "rs3": 16299,
    "rs4": 17134,
    "rs5": 17763,
    "19h1": 18362,
    "1903": 18362,
    "19h2": 18363,
    "20h1": 19041,
    "20h2": 19042,
    "21h1": 19043,
    "21h2": 19044,
    "22h2": 19045,
}
WINDOWS_11_BUILDS = {"21h2": 22000, "22h2": 22621, "23h2": 22631, "24h2": 26100, "25h2": 26200}
BUILD_1809 = 17763  # Windows 10 Enterprise: oldest supported
BUILD_1903 = 18362  # Windows 10 Enterprise multi-session: oldest supported
FIRST_WINDOWS_11_BUILD = 22000

ENTERPRISE, MULTI_SESSION, PRO, SERVER = "enterprise", "enterprise multi-session", "pro", "server"


@dataclass(frozen=True, slots=True)
class OperatingSystem:
    """Which Windows, as far as the image (or the guest agent) tells."""

    family: str  # "windows 10" | "windows 11" | "windows server" | "linux" | "unknown"
    edition: str | None  # ENTERPRISE | MULTI_SESSION | PRO | SERVER | None
    build: int | None
    evidence: str


def identify_os(vm: VmFacts) -> OperatingSystem:
    if (vm.os_type or "").lower() == "linux":
        return OperatingSystem("linux", None, None, f"osType {vm.os_type}")
    image = vm.image
    if image is not None and image.publisher and image.sku:
        from_image = _from_marketplace(image.publisher, image.offer or "", image.sku)
        if from_image is not None:
            return from_image
    if vm.os_name:
        return _from_guest(vm.os_name, vm.os_version)
    return OperatingSystem("unknown", None, None, "custom image and no guest agent report")


def _from_marketplace(publisher: str, offer: str, sku: str) -> OperatingSystem | None:
    evidence = f"image {publisher}:{offer}:{sku}"
    publisher, offer, sku = publisher.lower(), offer.lower(), sku.lower()
    if publisher == "microsoftwindowsserver":
        return OperatingSystem("windows server", SERVER, None, evidence)
    if publisher != "microsoftwindowsdesktop":
        return None
    tokens = sku.split("-")
    edition = PRO if {"pro", "pron"} & set(tokens) else None
    if {"ent", "entn", "enterprise", "enterprisen"} & set(tokens):
        edition = ENTERPRISE
    if {"evd", "avd"} & set(tokens):
        edition = MULTI_SESSION
    windows_11 = "windows-11" in offer or sku.startswith("win11")
    codename = next((token for token in tokens if token in WINDOWS_10_BUILDS or token in WINDOWS_11_BUILDS), None)
    if windows_11:
        return OperatingSystem("windows 11", edition, WINDOWS_11_BUILDS.get(codename or ""), evidence)
    return OperatingSystem("windows 10", edition, WINDOWS_10_BUILDS.get(codename or ""), evidence)


def _from_guest(os_name: str, os_version: str | None) -> OperatingSystem:
    evidence = f"guest reports {os_name} {os_version or ''}".strip()
    name = os_name.lower()
    build_match = re.match(r"^\d+\.\d+\.(\d+)", os_version or "")
    build = int(build_match.group(1)) if build_match else None
    if "server" in name:
        return OperatingSystem("windows server", SERVER, build, evidence)
    family = "windows 11" if "windows 11" in name or (build or 0) >= FIRST_WINDOWS_11_BUILD else "windows 10"
    edition = None
    if "enterprise" in name:
        edition = MULTI_SESSION if "multi-session" in name or "virtual desktop" in name else ENTERPRISE
    elif "pro" in name.split():
        edition = PRO
    return OperatingSystem(family, edition, build, evidence)
