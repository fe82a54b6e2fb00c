"""Start the local Graph and ARM simulators and the managed-identity endpoint.

`running_simulators(seed)` serves a tenant seeded from a JSON document (see
`localdev/tenants/sample.json`) and returns the app settings that point the
responder at it. Nothing here touches the product code: the responder reaches
the simulators through its ordinary settings and its real credential chain.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localdev.arm_sim import ArmSimulator, ArmWorld
from localdev.eventgrid_sim import EventGridTopicSimulator
from localdev.graph_sim import GraphSimulator, GraphTenant
from localdev.sim_http import IdentityEndpoint, LocalCertificateAuthority, SimulatorServer, TokenBook, serving
from responder.decisions.clouds import PUBLIC, Cloud

TENANTS = Path(__file__).resolve().parent / "tenants"


@dataclass
class Simulators:
    graph: SimulatorServer
    arm: SimulatorServer
    graph_router: GraphSimulator
    arm_router: ArmSimulator
    topic: SimulatorServer
    topic_router: EventGridTopicSimulator
    identity: IdentityEndpoint
    tenant: GraphTenant
    world: ArmWorld
    ca_file: Path
    cloud: Cloud = PUBLIC

    @property
    def settings(self) -> dict[str, str]:
        """App settings (environment variables) that point the responder here."""
        return {
            "RESPONDER_CLOUD": self.cloud.name,
            "RESPONDER_GRAPH_URL": f"{self.graph.url}/v1.0",
            "RESPONDER_ARM_URL": self.arm.url,
            "RESPONDER_CA_FILE": str(self.ca_file),
            "RESPONDER_FINDINGS_TOPIC_ENDPOINT": f"{self.topic.url}/api/events",
            # The App Service managed-identity protocol, as inside Azure Functions.
            "IDENTITY_ENDPOINT": self.identity.url,
            "IDENTITY_HEADER": self.identity.tokens.identity_header,
        }


def load_seed(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.exists():
        path = TENANTS / f"{name_or_path}.json"
    seed: dict[str, Any] = json.loads(path.read_text())
    return seed


@contextlib.contextmanager
def running_simulators(
    seed: dict[str, Any], page_size: int | None = None, cloud: Cloud = PUBLIC
) -> Iterator[Simulators]:
    """Graph, ARM and an Event Grid topic on HTTPS loopback ports, as `cloud`'s services: they
    accept only tokens issued for that cloud's Graph and ARM, and its `@odata.id` root."""
    tokens = TokenBook()
    tenant, world = GraphTenant.from_seed(seed), ArmWorld.from_seed(seed)
    graph_router, arm_router = GraphSimulator(tenant, cloud=cloud), ArmSimulator(world)
    if page_size is not None:
        graph_router.page_size = arm_router.page_size = page_size
    with tempfile.TemporaryDirectory(prefix="simulators-") as folder:
        tls = LocalCertificateAuthority(Path(folder))
        graph = SimulatorServer("graph", graph_router, tls, tokens, audience=cloud.graph)
        arm = SimulatorServer("arm", arm_router, tls, tokens, audience=cloud.arm)
        graph_router.base_url, arm_router.base_url = graph.url, arm.url
        topic_router = EventGridTopicSimulator()
        topic = SimulatorServer("eventgrid", topic_router, tls, tokens)
        identity = IdentityEndpoint(tokens)
        with serving(graph, arm, topic, identity):
            yield Simulators(
                graph, arm, graph_router, arm_router, topic, topic_router, identity, tenant, world, tls.ca_file, cloud
            )


def main() -> None:
    """Serve the sample tenant until Ctrl-C and print the settings that point a host at it."""
    import time

    with running_simulators(load_seed("sample")) as simulators:
        print('Graph and ARM simulators are up. Put these in local.settings.json "Values":')
        print(json.dumps(simulators.settings, indent=2))
        print("Ctrl-C stops them.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
