"""The Azure clouds the responder runs in, and what each one's endpoints are.

Named as Bicep's `environment().name` names them, so the template passes its own cloud.
Token scopes and the Graph `@odata.id` root belong to the cloud, not to the URL the app
talks to: a local simulator (or a proxy) is reached at another URL, but the token it is
sent is still for the cloud's Graph and ARM.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cloud:
    name: str
    graph: str  # Microsoft Graph, the resource tokens are for
    arm: str  # Azure Resource Manager
    authority: str  # Entra ID sign-in host (developer credentials; managed identity needs none)
    storage_suffix: str  # <account>.table.<suffix>, <account>.queue.<suffix>

    @property
    def graph_scope(self) -> str:
        return f"{self.graph}/.default"

    @property
    def arm_scope(self) -> str:
        return f"{self.arm}/.default"

    @property
    def directory_object_root(self) -> str:
        """What `@odata.id` of a directory object starts with in this cloud's Graph."""
        return f"{self.graph}/v1.0/directoryObjects/"


# Microsoft's national cloud endpoint tables (Graph: "National cloud deployments"; ARM and
# storage: the `environment()` values of each cloud). US Government is the L4 (GCC High)
# Graph endpoint; for DoD (L5) set RESPONDER_GRAPH_URL to https://dod-graph.microsoft.us/v1.0.
CLOUDS: dict[str, Cloud] = {
    cloud.name.lower(): cloud
    for cloud in (
        Cloud(
            "AzureCloud",
            "https://graph.microsoft.com",
            "https://management.azure.com",
            "login.microsoftonline.com",
            "core.windows.net",
        ),
        Cloud(
            "AzureUSGovernment",
            "https://graph.microsoft.us",
            "https://management.usgovcloudapi.net",
            "login.microsoftonline.us",
            "core.usgovcloudapi.net",
        ),
        Cloud(
            "AzureChinaCloud",
            "https://microsoftgraph.chinacloudapi.cn",
            "https://management.chinacloudapi.cn",
            "login.chinacloudapi.cn",
            "core.chinacloudapi.cn",
        ),
    )
}
PUBLIC = CLOUDS["azurecloud"]
