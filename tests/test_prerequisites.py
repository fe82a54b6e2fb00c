"""The enrolment prerequisite rules (design §3), one table: VM facts → exactly these findings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from responder.decisions.facts import Extension, HostPool, ImageDefinition, ImageReference, Unreadable, VmFacts
from responder.decisions.joins import INTUNE_MDM_ID
from responder.decisions.model import FindingSource, PowerState, VmRef
from responder.decisions.os_identity import identify_os
from responder.decisions.prerequisites import (
    RULES,
    CheckFacts,
    check,
    has_errors,
)

ENTRA_JOIN = Extension(
    "AADLoginForWindows", "Microsoft.Azure.ActiveDirectory", "AADLoginForWindows", {"mdmId": INTUNE_MDM_ID}
)
ENTRA_JOIN_NO_MDM = Extension("AADLoginForWindows", "Microsoft.Azure.ActiveDirectory", "AADLoginForWindows", {})
AD_JOIN = Extension("JoinDomain", "Microsoft.Compute", "JsonADDomainExtension", {"Name": "corp.contoso.com"})
ENTRA_DS_JOIN = Extension("JoinDomain", "Microsoft.Compute", "JsonADDomainExtension", {"Name": "aadds.contoso.com"})
AVD_DSC_ENTRA = Extension(
    "Microsoft.PowerShell.DSC",
    "Microsoft.Powershell",
    "DSC",
    {"properties": {"hostPoolName": "hp", "aadJoin": True, "mdmId": INTUNE_MDM_ID}},
)
GALLERY = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images"
PERSONAL = HostPool("/hp/personal", "hp-personal", "Personal", "Persistent", "1.0.9742.1000")
POOLED = HostPool("/hp/pooled", "hp-pooled", "Pooled", "BreadthFirst", "1.0.9742.1000")
POOLED_OLD_AGENT = replace(POOLED, agent_version="1.0.2800.2802")
CENTRAL_IMAGE = "/subscriptions/central/resourceGroups/rg-images/providers/Microsoft.Compute/galleries/g/images/golden"
REFUSED = "Azure Resource Manager refused the app's identity (AuthorizationFailed)"
IMAGE_UNREADABLE = Unreadable(
    CENTRAL_IMAGE, "Microsoft.Compute/galleries/images/read", "/subscriptions/central/resourceGroups/rg-images", REFUSED
)
POOLS_UNREADABLE = Unreadable(
    "/subscriptions/s/providers/Microsoft.DesktopVirtualization/hostPools",
    "Microsoft.DesktopVirtualization/hostPools/read and hostPools/sessionHosts/read",
    "/subscriptions/s",
    REFUSED,
)


def marketplace(sku: str, offer: str = "windows-11", publisher: str = "MicrosoftWindowsDesktop") -> ImageReference:
    return ImageReference(publisher=publisher, offer=offer, sku=sku)


def vm(
    image: ImageReference | None = None,
    extensions: tuple[Extension, ...] = (ENTRA_JOIN,),
    **changes: object,
) -> VmFacts:
    facts = VmFacts(
        ref=VmRef("s", "rg", "vm1"),
        vm_id="id",
        computer_name="vm1",
        os_type="Windows",
        power_state=PowerState.RUNNING,
        image=image if image is not None else marketplace("win11-23h2-ent"),
        os_disk_create_option="FromImage",
        extensions=extensions,
    )
    return replace(facts, **changes)  # type: ignore[arg-type]


W10 = "Windows-10"
CASES: list[tuple[str, CheckFacts, set[tuple[str, str]]]] = [
    ("windows 11 enterprise, Entra-joined with Intune enrolment", CheckFacts(vm()), set()),
    (
        "windows 10 22h2 enterprise, AD-joined",
        CheckFacts(vm(marketplace("win10-22h2-ent", W10), (AD_JOIN,))),
        {("join", "info")},
    ),
    (
        "windows 10 1803 enterprise is too old",
        CheckFacts(vm(marketplace("rs4-enterprise", W10))),
        {("os-version", "error")},
    ),
    ("windows 10 1809 enterprise is the oldest supported", CheckFacts(vm(marketplace("rs5-enterprise", W10))), set()),
    (
        "windows 10 1809 multi-session is too old",
        CheckFacts(vm(marketplace("rs5-evd", W10))),
        {("os-version", "error")},
    ),
    ("windows 10 1903 multi-session is supported", CheckFacts(vm(marketplace("19h1-evd", W10))), set()),
    (
        "windows 10 2004 multi-session with Microsoft 365 apps",
        CheckFacts(vm(marketplace("20h1-evd-o365pp", "office-365"))),
        {("os-update", "info")},  # 2004 needs the July 2021 update; the guest hasn't said its level yet
    ),
    (
        "windows 11 multi-session in a pooled host pool",
        CheckFacts(vm(marketplace("win11-23h2-avd")), host_pool=POOLED),
        {("host-pool", "info")},
    ),
    (
        "windows 11 single-session in a pooled (non-persistent) host pool",
        CheckFacts(vm(), host_pool=POOLED),
        {("host-pool", "warning")},
    ),
    ("a personal host pool", CheckFacts(vm(), host_pool=PERSONAL), {("host-pool", "info")}),
    (
        "pooled multi-session with an old AVD agent",
        CheckFacts(vm(marketplace("win11-23h2-avd")), host_pool=POOLED_OLD_AGENT),
        {("host-pool", "info"), ("avd-agent", "warning")},
    ),
    (
        "a specialized gallery image is a clone",
        CheckFacts(
            vm(ImageReference(id=f"{GALLERY}/golden/versions/1.0.0"), os_name="Windows 11 Enterprise"),
            image_definition=ImageDefinition(f"{GALLERY}/golden", "Windows", "Specialized"),
        ),
        {("cloned-image", "error")},
    ),
    (
        "a generalized gallery image read through the guest agent",
        CheckFacts(
            vm(ImageReference(id=f"{GALLERY}/golden"), os_name="Windows 11 Enterprise", os_version="10.0.22631"),
            image_definition=ImageDefinition(f"{GALLERY}/golden", "Windows", "Generalized"),
        ),
        set(),
    ),
    (
        "an attached copy of an OS disk",
        CheckFacts(vm(os_disk_create_option="Attach", os_name="Windows 10 Enterprise", image=None)),
        {("cloned-image", "error")},
    ),
    (
        "a gallery image the app can't read: the other rules still run",
        CheckFacts(
            vm(ImageReference(id=f"{CENTRAL_IMAGE}/versions/1.0.0"), (), os_name="Windows 11 Enterprise"),
            image_unreadable=IMAGE_UNREADABLE,
        ),
        {("image-unreadable", "warning"), ("join", "warning")},
    ),
    (
        "a gallery image the app can't read on an attached OS disk is still a clone",
        CheckFacts(
            vm(ImageReference(id=CENTRAL_IMAGE), os_disk_create_option="Attach", os_name="Windows 11 Enterprise"),
            image_unreadable=IMAGE_UNREADABLE,
        ),
        {("image-unreadable", "warning"), ("cloned-image", "error")},
    ),
    (
        "a session host whose host pool the app can't read",
        CheckFacts(vm(extensions=(AVD_DSC_ENTRA,)), host_pool_unreadable=POOLS_UNREADABLE),
        {("host-pool-unreadable", "warning")},
    ),
    (
        "windows server",
        CheckFacts(vm(marketplace("2022-datacenter-azure-edition", "WindowsServer", "MicrosoftWindowsServer"))),
        {("os-edition", "error")},
    ),
    ("windows 11 pro", CheckFacts(vm(marketplace("win11-23h2-pro"))), {("os-edition", "error")}),
    (
        "windows 10 pro read through the guest agent",
        CheckFacts(vm(ImageReference(id=f"{GALLERY}/pro"), os_name="Windows 10 Pro", os_version="10.0.19045")),
        {("os-edition", "error")},
    ),
    (
        "linux is not applicable",
        CheckFacts(vm(marketplace("server", "ubuntu-24_04-lts", "Canonical"), (), os_type="Linux")),
        {("not-applicable", "info")},
    ),
    ("Entra-joined without the Intune mdmId", CheckFacts(vm(extensions=(ENTRA_JOIN_NO_MDM,))), {("join", "warning")}),
    ("neither Entra- nor AD-joined", CheckFacts(vm(extensions=())), {("join", "warning")}),
    (  # a template or the portal writes the extensions after the VM: said once the device check ends
        "neither joined yet, while the device check is under way",
        CheckFacts(vm(extensions=()), hold_missing_join=True),
        set(),
    ),
    (  # what is held back is the missing join only
        "Entra-joined without the Intune mdmId, while the device check is under way",
        CheckFacts(vm(extensions=(ENTRA_JOIN_NO_MDM,)), hold_missing_join=True),
        {("join", "warning")},
    ),
    (
        "joined to an Entra Domain Services domain",
        CheckFacts(vm(extensions=(ENTRA_DS_JOIN,)), entra_ds_domains=frozenset({"aadds.contoso.com"})),
        {("join", "error")},
    ),
    (
        "AVD host Entra-joined by the DSC extension",
        CheckFacts(vm(extensions=(AVD_DSC_ENTRA,)), host_pool=PERSONAL),
        {("host-pool", "info")},
    ),
    (
        "a custom image the guest agent hasn't reported on",
        CheckFacts(
            vm(ImageReference(id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/custom"))
        ),
        {("os-edition", "warning")},
    ),
    (
        "windows 10 multi-session 1809 read through the guest agent",
        CheckFacts(
            vm(
                ImageReference(id=f"{GALLERY}/ms"),
                os_name="Windows 10 Enterprise multi-session",
                os_version="10.0.17763",
            )
        ),
        {("os-version", "error")},
    ),
]


@pytest.mark.parametrize(
    ("facts", "expected"), [(facts, expected) for _, facts, expected in CASES], ids=[c[0] for c in CASES]
)
def test_the_rules_find_exactly(facts: CheckFacts, expected: set[tuple[str, str]]) -> None:
    assert {(finding.rule_id, finding.severity) for finding in check(facts)} == expected


def test_every_finding_says_why_and_where_it_comes_from() -> None:
    for _, facts, _ in CASES:
        for finding in check(facts):
            assert finding.message.endswith(".")
            assert finding.evidence


def test_an_unreadable_image_names_the_role_to_grant_and_where() -> None:
    facts = vm(ImageReference(id=CENTRAL_IMAGE), os_name="Windows 11 Enterprise")

    (finding,) = check(CheckFacts(facts, image_unreadable=IMAGE_UNREADABLE))

    assert finding.rule_id == "image-unreadable"
    assert "Reader role (or a role with Microsoft.Compute/galleries/images/read)" in finding.message
    assert "on resource group rg-images of subscription central, or on that subscription." in finding.message
    assert finding.evidence == f"{CENTRAL_IMAGE}: {REFUSED}"


def test_an_unreadable_host_pool_names_the_role_to_grant_and_where() -> None:
    (finding,) = check(CheckFacts(vm(extensions=(AVD_DSC_ENTRA,)), host_pool_unreadable=POOLS_UNREADABLE))

    assert finding.rule_id == "host-pool-unreadable"
    assert "Reader role (or a role with Microsoft.DesktopVirtualization/hostPools/read" in finding.message
    assert finding.message.endswith("on subscription s.")


def test_an_error_finding_fails_the_check() -> None:
    assert has_errors(check(CheckFacts(vm(marketplace("win11-23h2-pro")))))
    assert not has_errors(check(CheckFacts(vm())))


def test_each_rule_reports_only_the_rule_ids_it_declares() -> None:
    for _, facts, _ in CASES:
        system = identify_os(facts.vm)
        for rule in RULES:
            assert {finding.rule_id for finding in rule(facts, system)} <= rule.ids, rule.check.__name__


def test_every_create_time_finding_names_the_create_time_check_as_its_source() -> None:
    """What the check replaces when it looks again is what it raised itself: the source says so."""
    for _, facts, _ in CASES:
        assert {finding.phase for finding in check(facts)} <= {FindingSource.CREATE}
