"""The services that make up the system, in start order: each one's actor (its name, description, default metrics
port and configuration check are the actor's own).

`stocktracker up`, the deployment files and their static checks all read this list; stopping goes in the same
order (ingest first, so nothing new enters while the others finish, gateway last).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.alerts.service import AlertsService
from services.board.service import BoardService
from services.classifier.service import ClassifierService
from services.derivatives.service import DerivativesService
from services.foreign.service import ForeignService
from services.gateway.service import Gateway
from services.index.service import IndexService
from services.ingest.service import Ingest
from services.recorder.service import Recorder
from shared.runtime import Actor


@dataclass(frozen=True)
class ServiceSpec:
    actor: type[Actor]

    @property
    def name(self) -> str:
        return self.actor.name

    @property
    def description(self) -> str:
        return self.actor.description

    @property
    def metrics_port(self) -> int:
        return self.actor.metrics_port

    @property
    def module(self) -> str:
        return f"services.{self.name}"


SERVICES: tuple[ServiceSpec, ...] = tuple(ServiceSpec(actor) for actor in (
    Ingest, ClassifierService, ForeignService, IndexService, DerivativesService, BoardService, AlertsService, Recorder,
    Gateway))
