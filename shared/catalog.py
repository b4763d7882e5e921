"""The services that make up the system, in start order, with their default metrics ports.

`stocktracker up`, the deployment files and their static checks all read this list; stopping goes in the same
order (ingest first, so nothing new enters while the others finish, gateway last).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    description: str
    metrics_port: int

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    def is_built(self) -> bool:
        """Whether the service's package exists yet (services land issue by issue)."""
        return importlib.util.find_spec(self.module) is not None


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("ingest", "Reads the SSI feed (live, simulated or replayed), publishes normalized market data", 9101),
    ServiceSpec("classifier", "Classifies trades as active buy / active sell; session stats and prices", 9102),
    ServiceSpec("foreign", "Foreign investors' flows, speed and acceleration; the VN30 summary", 9103),
    ServiceSpec("index", "Index values, breadth and intraday series", 9104),
    ServiceSpec("derivatives", "VN30F futures and their basis to the VN30 index", 9105),
    ServiceSpec("recorder", "Persists every tick, flow, index point and basis point to PostgreSQL", 9106),
    ServiceSpec("gateway", "REST snapshots, history and WebSocket streams", 9107),
)

SERVICES_BY_NAME = {spec.name: spec for spec in SERVICES}


def default_metrics_port(name: str) -> int:
    """A service's own metrics port; other names (tools, tests) get 0, any free port."""
    spec = SERVICES_BY_NAME.get(name)
    return spec.metrics_port if spec else 0
