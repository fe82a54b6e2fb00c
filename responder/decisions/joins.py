"""How a VM joins a directory, read from its extensions. Pure.

Entra join: the `AADLoginForWindows` extension, or the AVD registration (DSC) with
`aadJoin`; either names the MDM application (`mdmId`) that enrols it. AD join (the
hybrid path): `JsonADDomainExtension`.
"""

from __future__ import annotations

from responder.decisions.facts import Extension

INTUNE_MDM_ID = "0000000a-0000-0000-c000-000000000000"  # the Intune MDM application id
# The extension types a join is read from (lower case): Entra join, the AVD registration, AD join.
JOIN_EXTENSION_TYPES = frozenset({"aadloginforwindows", "dsc", "jsonaddomainextension"})


def join_kind(extensions: tuple[Extension, ...]) -> str | None:
    """How the VM joins a directory, from its extensions: `entra`, `domain` (hybrid), or None (unknown, or both)."""
    entra, domain = entra_join(extensions) is not None, domain_join(extensions) is not None
    if entra == domain:
        return None
    return "entra" if entra else "domain"


def entra_join(extensions: tuple[Extension, ...]) -> tuple[str | None, str] | None:
    for extension in extensions:
        if extension.type.lower() == "aadloginforwindows":
            mdm_id = extension.settings.get("mdmId")
            return (str(mdm_id) if mdm_id else None), f"AADLoginForWindows mdmId {mdm_id or 'absent'}"
        if extension.type.lower() == "dsc":
            properties = extension.settings.get("properties") or {}
            if isinstance(properties, dict) and str(properties.get("aadJoin", "")).lower() == "true":
                mdm_id = properties.get("mdmId")
                return (str(mdm_id) if mdm_id else None), f"AVD DSC aadJoin, mdmId {mdm_id or 'absent'}"
    return None


def domain_join(extensions: tuple[Extension, ...]) -> str | None:
    for extension in extensions:
        if extension.type.lower() == "jsonaddomainextension":
            return str(extension.settings.get("Name") or extension.settings.get("name") or "")
    return None
