"""The index service: SSI's index updates (md.index.*) into IndexPoint events and each index's state in KV."""

from __future__ import annotations

from typing import Any

import msgspec
from prometheus_client import Counter

from services.index.core import IndexCore, IndexDay
from shared.messages.domain import IndexUpdate
from shared.subjects import MD_INDEX, Bucket, derived_subject
from shared.tracker import Tracker

POINTS = Counter("stocktracker_index_points_total", "Index points published")
STALE = Counter("stocktracker_index_stale_total", "Index updates older than the latest one, ignored")


class IndexState(msgspec.Struct):
    indices: dict[str, IndexDay]


class IndexService(Tracker[IndexState]):
    name = "index"
    description = "Index values, breadth and intraday series"
    metrics_port = 9104
    inputs = ((MD_INDEX.wildcard, IndexUpdate),)
    state_type = IndexState
    partitionable = False

    def __init__(self) -> None:
        super().__init__()
        self.core = IndexCore()
        self._encode = msgspec.json.Encoder().encode

    def restore(self, state: IndexState | None) -> None:
        self.core = IndexCore(state.indices if state else None)

    def snapshot(self) -> IndexState:
        return IndexState(indices=self.core.indices)

    async def handle(self, subject: str, update: IndexUpdate) -> None:
        point = self.core.on_update(update)
        if point is None:
            STALE.inc()
            return
        assert self.ctx is not None
        assert self.kv is not None
        key = f"point:{point.index_id}:{point.timestamp.isoformat()}:{point.value}"
        await self.ctx.publisher.publish(derived_subject(point), self._encode(point), key)
        POINTS.inc()
        day = self.core.indices[update.index_id]
        self.kv.put(Bucket.INDICES, update.index_id, lambda: self._encode(day.data))

    def status(self) -> dict[str, Any]:
        return {**super().status(), "indices": sorted(self.core.indices), "stale": self.core.stale}
