"""Reference data every service agrees on when the feed has not said otherwise."""

from __future__ import annotations

from datetime import date

from shared.market import DEFAULT_VN30_BASKET
from shared.messages.domain import IndexBasket


def configured_basket(symbols: list[str], trading_date: date) -> IndexBasket:
    """The VN30 basket from VN30_SYMBOLS when set, else the built-in one. The live feed's (SSI IndexComponents, in
    the reference bucket) overrides both."""
    if symbols:
        return IndexBasket(index_id="VN30", symbols=list(symbols), source="config", trading_date=trading_date)
    return IndexBasket(index_id="VN30", symbols=list(DEFAULT_VN30_BASKET), source="builtin", trading_date=trading_date)
