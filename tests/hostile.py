"""Hostile frames: what a corrupt or malicious feed can send, each with the reason ingest must refuse it for. They look
like frames of the recorded day (24/11/2026, its symbols), so mixed into it they test that nothing they carry gets
through, and that the day around them comes out exactly as without them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import REPLAY_DAY, frame

_TRADE = {"RType": "X-TRADE", "TradingDate": "24/11/2026", "Time": "10:01:00", "Symbol": "ACB", "Exchange": "HOSE",
          "RefPrice": 24550.0, "Ceiling": 26250.0, "Floor": 22850.0, "LastPrice": 24600.0, "LastVol": 100.0,
          "TotalVol": 1_000_000_000.0, "TradingSession": "LO"}
_QUOTE = {"RType": "X-QUOTE", "TradingDate": "24/11/2026", "Time": "10:01:00", "Symbol": "FPT", "Exchange": "HOSE",
          "TradingSession": "LO", "BidPrice1": 98000.0, "BidVol1": 100.0, "AskPrice1": 98100.0, "AskVol1": 100.0}
_INDEX = {"RType": "MI", "IndexId": "VN30", "TradingDate": "24/11/2026", "Time": "10:01:00", "IndexValue": 1.0,
          "Advances": 1, "Declines": 1, "NoChanges": 1}
_ROOM = {"RType": "R", "TradingDate": "24/11/2026", "Time": "10:01:00", "Symbol": "FPT", "Exchange": "HOSE",
         "BuyVol": 1.0, "SellVol": 1.0, "BuyVal": 1.0, "SellVal": 1.0}


def _trade(**fields: Any) -> bytes:
    return frame("X-TRADE", {**_TRADE, **fields})


def _deep(levels: int) -> bytes:
    return b'{"DataType":"X-TRADE","Content":' + b"[" * levels + b"]" * levels + b"}"


# (the reason ingest gives, the frame), every class of the poison-proof issue at least once.
HOSTILE: list[tuple[str, bytes]] = [
    ("non_finite", _trade(LastVol="inf")),
    ("non_finite", _trade(LastPrice="NaN")),
    ("non_finite", _trade(TotalVol="Infinity")),
    ("non_finite", _trade(TotalVol="9" * 400)),  # a numeric string that overflows
    ("non_finite", b'{"DataType":"X-TRADE","Content":{"RType":"X-TRADE","TradingDate":"24/11/2026","Time":"10:01:00",'
                   b'"Symbol":"ACB","LastPrice":24600,"LastVol":1e400,"TotalVol":1000000000}}'),  # a number that does
    ("non_finite", frame("X-QUOTE", {**_QUOTE, "BidPrice1": "-Infinity"})),
    ("non_finite", frame("R", {**_ROOM, "BuyVal": "1e999"})),
    ("out_of_range", _trade(TotalVol=1e15)),  # froze a symbol for the rest of the day
    ("out_of_range", _trade(LastPrice=1e300)),  # made the value infinite
    ("out_of_range", frame("MI", {**_INDEX, "IndexValue": 1e7})),
    ("out_of_range", frame("R", {**_ROOM, "BuyVol": 1e14})),
    ("implausible_date", _trade(TradingDate="01/01/2099")),  # carried ACB to 2099
    ("implausible_date", frame("MI", {**_INDEX, "TradingDate": "01/01/2099"})),  # set VN30 to 1.0, took the basis away
    ("implausible_date", _trade(TradingDate="20/12/2026")),  # 26 days ahead of the feed
    ("implausible_date", _trade(TradingDate="01/01/1999")),  # before the market's era
    ("bad_time", _trade(TradingDate="31/02/2026")),
    ("bad_time", _trade(Time="25:61:00")),
    ("control_character", _trade(TradingSession="L\u0000O")),  # reached PostgreSQL and stopped the recorder
    ("control_character", frame("X-QUOTE", {**_QUOTE, "Exchange": "HO\tSE"})),
    ("control_character", json.dumps({"DataType": "X-TRADE", "Content": {**_TRADE, "TradingSession": "\u0085"}})
     .encode()),
    ("string_too_long", _trade(TradingSession="L" * 100)),
    ("too_large", _trade(TradingSession="x" * 1_200_000)),  # a 1.2 MB string field
    ("too_large", _deep(100_000)),  # a document nested 100,000 deep
    ("too_deep", _deep(2_000)),
]


def hostile_day(path: Path) -> Path:
    """The recorded day with every hostile frame mixed in, spread over the session (none before the day's first
    frames: the feed's date comes from them)."""
    lines = REPLAY_DAY.read_bytes().splitlines()
    step = (len(lines) - 20) // len(HOSTILE)
    mixed: list[bytes] = lines[:20]
    rest = lines[20:]
    for index, (_, hostile) in enumerate(HOSTILE):
        mixed += [*rest[index * step:(index + 1) * step], hostile]
    mixed += rest[len(HOSTILE) * step:]
    path.write_bytes(b"\n".join(mixed) + b"\n")
    return path
