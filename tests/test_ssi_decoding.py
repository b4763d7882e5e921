"""Decoding SSI frames: every channel type, SSI's variants, and a clear rejection for malformed input."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime

import msgspec
import pytest
from helpers import REPLAY_DAY, expected_day, frame

from shared.market import EXCHANGE_TZ
from shared.messages.domain import (
    Bar,
    ForeignRoom,
    IndexUpdate,
    PriceLevel,
    Quote,
    Rejection,
    SecurityStatus,
    Trade,
    TradeType,
)
from shared.messages.ssi import Decoded, decode_frame

TRADE = {
    "RType": "X-TRADE", "TradingDate": "24/11/2026", "Time": "09:42:47", "Isin": "BID", "Symbol": "BID",
    "Ceiling": 48450.0, "Floor": 42150.0, "RefPrice": 45300.0, "AvgPrice": 45383.68, "PriorVal": 45300.0,
    "LastPrice": 45400.0, "LastVol": 9800.0, "TotalVal": 3753230000.0, "TotalVol": 82700.0, "MarketId": "HOSE",
    "Exchange": "HOSE", "TradingSession": "LO", "TradingStatus": "N", "Change": 100.0, "RatioChange": 0.22,
    "EstMatchedPrice": 45400.0, "Highest": 45450, "Lowest": 45300, "Side": "BU",
}


def _book(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> dict[str, float]:
    levels: dict[str, float] = {}
    for side, values in (("Bid", bids), ("Ask", asks)):
        for index in range(1, 11):
            price, volume = values[index - 1] if index <= len(values) else (0.0, 0.0)
            levels[f"{side}Price{index}"] = price
            levels[f"{side}Vol{index}"] = volume
    return levels


QUOTE = {
    "RType": "X-QUOTE", "TradingDate": "24/11/2026", "Time": "09:01:59", "Symbol": "MWG", "Exchange": "HOSE",
    "MarketId": "HOSE", "TradingSession": "ATO", "TradingStatus": "N",
    **_book([(61000.0, 12500.0), (60900.0, 13100.0), (60800.0, 18200.0)], [(61100.0, 9900.0)]),
}
FOREIGN = {
    "RType": "R", "TradingDate": "24/11/2026", "Time": "10:15:00", "Isin": "FPT", "Symbol": "FPT",
    "TotalRoom": 1709000000.0, "CurrentRoom": 569066666.0, "BuyVol": 633000.0, "SellVol": 33000.0,
    "BuyVal": 8197350000.0, "SellVal": 427350000.0, "MarketId": "HOSE", "Exchange": "HOSE",
}
INDEX = {
    "RType": "MI", "IndexId": "VNIndex", "IndexName": "VNIndex", "TradingDate": "24/11/2026", "Time": "10:00:00",
    "IndexValue": 1674.52, "PriorIndexValue": 1687.12, "Change": -12.6, "RatioChange": -0.75, "TotalTrade": 0.0,
    "TotalQtty": 350000000.0, "TotalValue": 10769000000000.0, "Advances": 223, "NoChanges": 16, "Declines": 166,
    "Ceilings": 2, "Floors": 0, "IndexType": "Main", "TradingSession": "LO", "MarketId": None, "Exchange": "HOSE",
}
BAR = {
    "RType": "B", "TradingDate": "24/11/2026", "Time": "10:06:19", "Symbol": "ACB", "Open": 24550.0,
    "High": 24600.0, "Low": 24500.0, "Close": 24550.0, "Volume": 2900.0, "Value": 0.0,
}
STATUS = {
    "RType": "F", "MarketId": "HOSE", "TradingDate": "24/11/2026", "Time": "09:00:00", "Symbol": "ACB",
    "TradingSession": "ATO", "TradingStatus": "N", "Exchange": "HOSE",
}


def decoded(raw: bytes | str | dict) -> Decoded:
    result = decode_frame(raw)
    assert isinstance(result, Decoded), result
    return result


def rejected(raw: bytes | str | dict) -> Rejection:
    result = decode_frame(raw)
    assert isinstance(result, Rejection), result
    return result


def test_x_trade_becomes_a_trade_with_exchange_time_and_side() -> None:
    result = decoded(frame("X-TRADE", TRADE))
    assert result.data_type == "X-TRADE"
    (trade,) = result.messages
    assert trade == Trade(
        symbol="BID", exchange="HOSE", trading_date=date(2026, 11, 24),
        timestamp=datetime(2026, 11, 24, 9, 42, 47, tzinfo=EXCHANGE_TZ), price=45400.0, volume=9800,
        total_volume=82700, total_value=3753230000.0, ref_price=45300.0, ceiling=48450.0, floor=42150.0,
        session="LO", side=TradeType.MUA_CHU_DONG, change=100.0, ratio_change=0.22, highest=45450.0,
        lowest=45300.0, avg_price=45383.68,
    )
    assert trade.timestamp.utcoffset().total_seconds() == 7 * 3600
    assert trade.natural_key() == "2026-11-24:BID:82700"


def test_prices_stay_in_vnd() -> None:
    (trade,) = decoded(frame("X-TRADE", TRADE)).messages
    assert trade.price == 45400.0  # 45,400 VND, never ×1000


@pytest.mark.parametrize(("side", "expected"), [("SD", TradeType.BAN_CHU_DONG), ("sd", TradeType.BAN_CHU_DONG),
                                                  (None, None), ("", None), ("XX", None)])
def test_trade_side_flag(side: str | None, expected: TradeType | None) -> None:
    (trade,) = decoded(frame("X-TRADE", {**TRADE, "Side": side})).messages
    assert trade.side == expected


def test_numbers_sent_as_strings_are_read_as_numbers() -> None:
    as_strings = {key: (str(value) if isinstance(value, float | int) else value) for key, value in TRADE.items()}
    (trade,) = decoded(frame("X-TRADE", as_strings)).messages
    assert trade.price == 45400.0
    assert trade.volume == 9800
    assert trade.total_volume == 82700
    assert trade.highest == 45450.0


def test_nulls_in_optional_fields_are_accepted() -> None:
    nulls = {**TRADE, "Isin": None, "Ceiling": None, "Floor": None, "RefPrice": None, "Change": None,
             "TradingSession": None, "Side": None, "MarketId": None, "Exchange": None, "TotalVal": None}
    (trade,) = decoded(frame("X-TRADE", nulls)).messages
    assert (trade.ceiling, trade.ref_price, trade.session, trade.side, trade.exchange) == (None, None, None, None, None)


def test_x_quote_keeps_only_present_levels() -> None:
    (quote,) = decoded(frame("X-QUOTE", QUOTE)).messages
    assert isinstance(quote, Quote)
    assert quote.bids == [PriceLevel(61000.0, 12500), PriceLevel(60900.0, 13100), PriceLevel(60800.0, 18200)]
    assert quote.asks == [PriceLevel(61100.0, 9900)]
    assert (quote.bid1, quote.ask1) == (61000.0, 61100.0)
    assert quote.session == "ATO"


def test_quote_with_an_empty_side_has_no_levels_there() -> None:
    at_ceiling = {**QUOTE, **_book([(65400.0, 250000.0)], [])}
    (quote,) = decoded(frame("X-QUOTE", at_ceiling)).messages
    assert quote.asks == []
    assert quote.ask1 == 0.0


def test_combined_x_frame_yields_the_trade_before_its_quote() -> None:
    combined = {**TRADE, **_book([(45400.0, 1000.0)], [(45450.0, 2000.0)]), "RType": "X", "Open": 45300.0}
    result = decoded(frame("X", combined))
    assert result.data_type == "X"
    trade, quote = result.messages
    assert isinstance(trade, Trade)
    assert isinstance(quote, Quote)
    assert trade.total_volume == 82700
    assert quote.bids == [PriceLevel(45400.0, 1000)]


def test_combined_x_frame_without_a_trade_yields_only_the_quote() -> None:
    book_only = {**QUOTE, "RType": "X", "LastPrice": None, "LastVol": None, "TotalVol": None}
    (quote,) = decoded(frame("X", book_only)).messages
    assert isinstance(quote, Quote)


@pytest.mark.parametrize("naming", ["short", "prefixed"])
def test_foreign_room_reads_either_field_naming(naming: str) -> None:
    content = dict(FOREIGN)
    if naming == "prefixed":
        for field in ("BuyVol", "SellVol", "BuyVal", "SellVal"):
            content[f"F{field}"] = content.pop(field)
    (room,) = decoded(frame("R", content)).messages
    assert room == ForeignRoom(
        symbol="FPT", exchange="HOSE", trading_date=date(2026, 11, 24),
        timestamp=datetime(2026, 11, 24, 10, 15, tzinfo=EXCHANGE_TZ), buy_volume=633000, sell_volume=33000,
        buy_value=8197350000.0, sell_value=427350000.0, total_room=1709000000.0, current_room=569066666.0,
    )


def test_foreign_room_without_figures_is_rejected() -> None:
    content = {key: value for key, value in FOREIGN.items() if key not in ("BuyVol",)}
    rejection = rejected(frame("R", content))
    assert rejection.reason == "missing_field"
    assert "BuyVol" in rejection.detail


def test_index_id_is_normalized_and_breadth_read() -> None:
    (index,) = decoded(frame("MI", INDEX)).messages
    assert isinstance(index, IndexUpdate)
    assert index.index_id == "VNINDEX"
    assert (index.value, index.prior_value, index.change) == (1674.52, 1687.12, -12.6)
    assert (index.advances, index.declines, index.no_changes, index.ceilings, index.floors) == (223, 166, 16, 2, 0)
    assert index.total_volume == 350000000.0


def test_index_without_value_is_rejected() -> None:
    assert rejected(frame("MI", {**INDEX, "IndexValue": None})).reason == "missing_field"
    assert rejected(frame("MI", {**INDEX, "IndexId": None})).reason == "missing_symbol"


def test_bar() -> None:
    (bar,) = decoded(frame("B", BAR)).messages
    assert bar == Bar(symbol="ACB", trading_date=date(2026, 11, 24),
                      timestamp=datetime(2026, 11, 24, 10, 6, 19, tzinfo=EXCHANGE_TZ),
                      open=24550.0, high=24600.0, low=24500.0, close=24550.0, volume=2900)


def test_bar_with_the_old_trading_time_field() -> None:
    old = {key: value for key, value in BAR.items() if key not in ("TradingDate", "Time")}
    (bar,) = decoded(frame("B", {**old, "TradingTime": "24/11/2026 10:06:19"})).messages
    assert bar.timestamp == datetime(2026, 11, 24, 10, 6, 19, tzinfo=EXCHANGE_TZ)


def test_security_status() -> None:
    (status,) = decoded(frame("F", STATUS)).messages
    assert status == SecurityStatus(symbol="ACB", exchange="HOSE", trading_date=date(2026, 11, 24),
                                    timestamp=datetime(2026, 11, 24, 9, 0, tzinfo=EXCHANGE_TZ),
                                    session="ATO", status="N")


@pytest.mark.parametrize("data_type", ["X-TRADE", "x-trade", "X-Trade", "Trade"])
def test_data_type_casing_and_legacy_names(data_type: str) -> None:
    assert decoded(frame(data_type, TRADE)).data_type == "X-TRADE"


def test_rtype_casing_and_data_type_fallback() -> None:
    content = {**QUOTE}
    content["Rtype"] = content.pop("RType")
    missing_data_type = json.dumps({"Content": json.dumps(content)})
    assert decoded(missing_data_type).data_type == "X-QUOTE"


def test_envelope_keys_in_any_case_and_content_already_an_object() -> None:
    lower = json.dumps({"datatype": "x-quote", "content": QUOTE})
    assert decoded(lower).data_type == "X-QUOTE"
    assert decoded(frame("B", BAR, encode_content=False)).data_type == "B"


def test_the_dict_the_ssi_client_hands_over() -> None:
    assert decoded({"DataType": "R", "Content": json.dumps(FOREIGN)}).data_type == "R"


def test_lower_case_symbols_are_upper_cased() -> None:
    (trade,) = decoded(frame("X-TRADE", {**TRADE, "Symbol": " bid "})).messages
    assert trade.symbol == "BID"


MALFORMED = [
    pytest.param(b"", "blank", id="empty"),
    pytest.param(b"   \n", "blank", id="whitespace"),
    pytest.param(b'{"DataType": "X-TRADE", "Content": "{\\"Symbol\\": 1', "invalid_json", id="truncated"),
    pytest.param(b"\xff\xfe", "invalid_json", id="binary"),
    pytest.param(b"[1, 2, 3]", "not_object", id="array"),
    pytest.param(b'"X-TRADE"', "not_object", id="string"),
    pytest.param(b"null", "not_object", id="null"),
    pytest.param(b'{"DataType": "X-QUOTE", "Content": "not json {"}', "content_not_json", id="content-not-json"),
    pytest.param(b'{"DataType": "X-QUOTE", "Content": "[1,2]"}', "content_not_object", id="content-array"),
    pytest.param(b'{"DataType": "X-QUOTE", "Content": 42}', "content_not_object", id="content-number"),
    pytest.param(b'{"DataType": "X-QUOTE"}', "missing_field", id="no-content"),
    pytest.param(b'{"DataType": "ZZ", "Content": "{}"}', "unknown_type", id="unknown-type"),
    pytest.param(b'{"Content": "{\\"Symbol\\": \\"ACB\\"}"}', "unknown_type", id="no-type-anywhere"),
    pytest.param(b'{"DataType": "OL", "Content": "{}"}', "unsupported_type", id="odd-lot"),
    pytest.param(frame("X-TRADE", {**TRADE, "Symbol": None}), "missing_symbol", id="null-symbol"),
    pytest.param(frame("X-TRADE", {k: v for k, v in TRADE.items() if k != "Symbol"}), "missing_symbol",
                 id="no-symbol"),
    pytest.param(frame("X-TRADE", {**TRADE, "Symbol": "AC B.>"}), "bad_symbol", id="subject-injection"),
    pytest.param(frame("X-TRADE", {**TRADE, "LastVol": -100.0}), "neg_lastvol", id="negative-volume"),
    pytest.param(frame("X-TRADE", {**TRADE, "TotalVol": -1}), "neg_totalvol", id="negative-total"),
    pytest.param(frame("X-QUOTE", {**QUOTE, "BidVol1": -5}), "neg_bidvol1", id="negative-book"),
    pytest.param(frame("X-TRADE", {**TRADE, "LastVol": "lots"}), "invalid_value", id="non-numeric-volume"),
    pytest.param(frame("X-TRADE", {**TRADE, "LastVol": 10.5}), "invalid_value", id="fractional-volume"),
    pytest.param(frame("X-TRADE", {**TRADE, "LastPrice": [1]}), "invalid_value", id="wrong-type"),
    pytest.param(frame("X-TRADE", {**TRADE, "LastPrice": None}), "missing_field", id="no-price"),
    pytest.param(frame("X-TRADE", {**TRADE, "TotalVol": 0, "LastVol": 0}), "no_trade", id="nothing-traded"),
    pytest.param(frame("X-TRADE", {**TRADE, "TradingDate": None}), "missing_field", id="no-date"),
    pytest.param(frame("X-TRADE", {**TRADE, "TradingDate": "31/02/2026"}), "bad_time", id="impossible-date"),
    pytest.param(frame("X-TRADE", {**TRADE, "Time": "25:99"}), "bad_time", id="bad-clock"),
    pytest.param(frame("B", {**BAR, "Open": None}), "missing_field", id="bar-no-open"),
]


@pytest.mark.parametrize(("raw", "reason"), MALFORMED)
def test_malformed_frames_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    rejection = rejected(raw)
    assert rejection.reason == reason
    assert rejection.detail
    assert rejection.raw == raw.decode(errors="replace")
    assert rejection.received_at.tzinfo is not None


def test_rejection_keeps_a_bounded_copy_of_the_raw_frame() -> None:
    huge = b'{"DataType": "ZZ", "Content": "' + b"x" * 100_000 + b'"}'
    assert len(rejected(huge).raw) == 4096


def test_rejection_is_a_wire_message() -> None:
    rejection = rejected(b"[1]")
    assert msgspec.json.decode(msgspec.json.encode(rejection), type=Rejection) == rejection


def test_recorded_day_decodes_to_the_expected_tallies() -> None:
    """The sample day's accepted and rejected counts, per DataType and per reason, are exactly the expected ones."""
    tally: Counter[str] = Counter()
    with REPLAY_DAY.open("rb") as lines:
        for line in lines:
            result = decode_frame(line)
            key = f"accepted:{result.data_type}" if isinstance(result, Decoded) else f"rejected:{result.reason}"
            tally[key] += 1
    expected = {key: value for key, value in expected_day()["counts"].items()
                if key.startswith(("accepted:", "rejected:"))}
    assert dict(tally) == expected


def test_domain_messages_round_trip_as_json() -> None:
    for raw in (frame("X-TRADE", TRADE), frame("X-QUOTE", QUOTE), frame("R", FOREIGN), frame("MI", INDEX),
                frame("B", BAR), frame("F", STATUS)):
        for message in decoded(raw).messages:
            encoded = msgspec.json.encode(message)
            assert msgspec.json.decode(encoded, type=type(message)) == message
            assert b"+07:00" in encoded
