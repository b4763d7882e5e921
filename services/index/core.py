"""The index tracker's pure core: each index's latest value and breadth, and a compact intraday series. No I/O.

Per index id and trading date: an update older than the latest one is ignored (counted); each accepted update
becomes the current IndexData and an IndexPoint event; the intraday series keeps one point per minute (the minute's
last value, stamped at the minute's start), so a full day is at most 375 points: small enough for one KV value.
advance_ratio = advances / (advances + declines), 0 when both are 0 (computed by IndexData itself).
"""

from __future__ import annotations

from datetime import date

import msgspec

from shared.messages.domain import IndexData, IndexPoint, IndexUpdate, IntradayPoint


class IndexDay(msgspec.Struct, kw_only=True):
    trading_date: date
    data: IndexData


class IndexCore:
    def __init__(self, indices: dict[str, IndexDay] | None = None) -> None:
        self.indices: dict[str, IndexDay] = indices or {}
        self.stale = 0

    def on_update(self, update: IndexUpdate) -> IndexPoint | None:
        day = self.indices.get(update.index_id)
        if day is not None and (update.trading_date, update.timestamp) < (day.trading_date,
                                                                          day.data.last_updated):
            self.stale += 1
            return None
        intraday = day.data.intraday if day is not None and day.trading_date == update.trading_date else []
        minute = update.timestamp.replace(second=0, microsecond=0)
        if intraday and intraday[-1].timestamp == minute:
            intraday[-1] = IntradayPoint(timestamp=minute, value=update.value)
        else:
            intraday.append(IntradayPoint(timestamp=minute, value=update.value))
        data = IndexData(
            index_id=update.index_id, trading_date=update.trading_date, value=update.value,
            prior_value=update.prior_value or 0.0, change=update.change or 0.0,
            ratio_change=update.ratio_change or 0.0, total_volume=update.total_volume or 0.0,
            advances=update.advances or 0, declines=update.declines or 0, no_changes=update.no_changes or 0,
            intraday=intraday, last_updated=update.timestamp,
        )
        self.indices[update.index_id] = IndexDay(trading_date=update.trading_date, data=data)
        return IndexPoint(index_id=update.index_id, trading_date=update.trading_date, timestamp=update.timestamp,
                          value=update.value)
