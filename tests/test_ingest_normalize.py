"""Ingest's pure core: verdicts on trades, the X frame's repeated trade part, natural-key message ids."""

from __future__ import annotations

import json

import msgspec
from helpers import REPLAY_DAY, frame
from test_ssi_decoding import QUOTE, TRADE, _book

from services.ingest.normalize import Normalized, Normalizer, Refused, TradeVerdict
from shared.messages.domain import Rejection, Trade


def accepted(result: Normalized | Refused) -> Normalized:
    assert isinstance(result, Normalized), result
    return result


def test_trade_verdicts_against_the_latest_total_volume() -> None:
    normalizer = Normalizer()
    first = accepted(normalizer.normalize(frame("X-TRADE", TRADE)))
    again = accepted(normalizer.normalize(frame("X-TRADE", TRADE)))
    later = accepted(normalizer.normalize(frame("X-TRADE", {**TRADE, "TotalVol": 90000.0, "LastVol": 7300.0})))
    late = accepted(normalizer.normalize(frame("X-TRADE", {**TRADE, "TotalVol": 80000.0, "LastVol": 100.0})))
    assert [r.trade_verdict for r in (first, again, later, late)] == [
        TradeVerdict.NEW, TradeVerdict.DUPLICATE, TradeVerdict.NEW, TradeVerdict.OUT_OF_ORDER]
    # X-TRADE frames are all published: the classifier keeps the exact tallies.
    assert all(len(r.messages) == 1 for r in (first, again, later, late))
    assert first.messages[0].msg_id == again.messages[0].msg_id == "trade:2026-11-24:BID:82700"


def test_a_new_trading_date_starts_over() -> None:
    normalizer = Normalizer()
    accepted(normalizer.normalize(frame("X-TRADE", TRADE)))
    next_day = accepted(normalizer.normalize(frame("X-TRADE", {**TRADE, "TradingDate": "25/11/2026",
                                                                "TotalVol": 100.0, "LastVol": 100.0})))
    assert next_day.trade_verdict is TradeVerdict.NEW


def test_combined_frame_publishes_its_trade_once_then_only_book_changes() -> None:
    normalizer = Normalizer()
    combined = {**TRADE, **_book([(45400.0, 1000.0)], [(45450.0, 2000.0)]), "RType": "X"}
    first = accepted(normalizer.normalize(frame("X", combined)))
    book_change = accepted(normalizer.normalize(frame("X", {**combined, **_book([(45400.0, 900.0)],
                                                                                  [(45450.0, 2000.0)])})))
    assert [m.subject for m in first.messages] == ["md.trade.BID", "md.quote.BID"]
    assert [m.subject for m in book_change.messages] == ["md.quote.BID"]
    assert book_change.trade_verdict is TradeVerdict.REPEAT


def test_a_book_shown_again_is_not_published_again() -> None:
    """A match that leaves the book as it stood: its X frame's trade goes out, the same book does not; the same
    levels in another session, with another projected price or on another day are news."""
    normalizer = Normalizer()
    book = _book([(45400.0, 1000.0)], [(45450.0, 2000.0)])
    combined = {**TRADE, **book, "RType": "X", "EstMatchedPrice": 0.0}  # 0: no auction running
    first = accepted(normalizer.normalize(frame("X", combined)))
    matched = accepted(normalizer.normalize(frame("X", {**combined, "TotalVol": 82800.0, "LastVol": 100.0})))
    assert [m.subject for m in first.messages] == ["md.trade.BID", "md.quote.BID"]
    assert [m.subject for m in matched.messages] == ["md.trade.BID"]
    assert matched.book_unchanged
    assert not first.book_unchanged
    same_book = {**QUOTE, **book, "Symbol": "BID", "TradingSession": "LO"}
    repeated = accepted(normalizer.normalize(frame("X-QUOTE", same_book)))
    assert repeated.messages == ()
    assert repeated.book_unchanged
    news = [
        {**combined, "TradingSession": "ATC"},
        {**combined, "TradingSession": "ATC", "EstMatchedPrice": 45400.0},
        {**combined, "TradingSession": "ATC", "EstMatchedPrice": 45400.0, "TradingDate": "25/11/2026"},
    ]
    for content in news:
        result = accepted(normalizer.normalize(frame("X", content)))
        assert "md.quote.BID" in [m.subject for m in result.messages], content
        assert not result.book_unchanged


def test_futures_trades_and_quotes_have_subjects_of_their_own() -> None:
    combined = {**TRADE, **_book([(1902.0, 10.0)], [(1902.5, 20.0)]), "RType": "X", "LastPrice": 1902.5}
    by_code = accepted(Normalizer().normalize(frame("X", {**combined, "Symbol": "VN30F2612", "Exchange": None,
                                                           "MarketId": None})))
    assert [m.subject for m in by_code.messages] == ["md.futures.trade.VN30F2612", "md.futures.quote.VN30F2612"]
    by_exchange = accepted(Normalizer().normalize(frame("X", {**combined, "Symbol": "41I1G3000",
                                                               "Exchange": "DERIVATIVES"})))
    assert [m.subject for m in by_exchange.messages] == ["md.futures.trade.41I1G3000", "md.futures.quote.41I1G3000"]
    unnamed = {**combined, "Symbol": "41I1G3000", "Exchange": None, "MarketId": None}
    assert accepted(Normalizer().normalize(frame("X", unnamed))).messages[0].subject == "md.trade.41I1G3000"
    told = Normalizer()
    told.futures.add("41I1G3000")  # from FUTURES_ALIASES or reference data (SecType FU)
    assert accepted(told.normalize(frame("X", unnamed))).messages[0].subject == "md.futures.trade.41I1G3000"


def test_message_ids_tell_apart_same_second_updates_and_repeat_on_a_second_read() -> None:
    quote_a = frame("X-QUOTE", QUOTE)
    quote_b = frame("X-QUOTE", {**QUOTE, **_book([(61000.0, 100.0)], [(61100.0, 9900.0)])})
    ids_first = [accepted(Normalizer().normalize(f)).messages[0].msg_id for f in (quote_a,)]
    normalizer = Normalizer()
    ids = [accepted(normalizer.normalize(f)).messages[0].msg_id for f in (quote_a, quote_b, quote_a)]
    assert len(set(ids)) == 3  # A, B, A in one second: three distinct updates, none dropped
    assert ids[0] == ids_first[0]
    again = Normalizer()
    assert [accepted(again.normalize(f)).messages[0].msg_id for f in (quote_a, quote_b, quote_a)] == ids


def test_rejection_is_published_with_its_reason() -> None:
    result = Normalizer().normalize(b'{"DataType": "X-QUOTE", "Content": "not json {"}')
    assert isinstance(result, Refused)
    assert result.reason == "content_not_json"
    assert result.message.subject == "md.rejected"
    rejection = msgspec.json.decode(result.message.payload, type=Rejection)
    assert rejection.reason == "content_not_json"
    assert json.loads(rejection.raw)["DataType"] == "X-QUOTE"


def test_payloads_are_the_domain_messages_as_json() -> None:
    result = accepted(Normalizer().normalize(frame("X-TRADE", TRADE)))
    trade = msgspec.json.decode(result.messages[0].payload, type=Trade)
    assert (trade.symbol, trade.price, trade.volume, trade.total_volume) == ("BID", 45400.0, 9800, 82700)


def test_recorded_day_verdicts() -> None:
    normalizer = Normalizer()
    verdicts: dict[str, int] = {}
    with REPLAY_DAY.open("rb") as lines:
        for line in lines:
            result = normalizer.normalize(line)
            if isinstance(result, Normalized) and result.trade_verdict:
                verdicts[result.trade_verdict] = verdicts.get(result.trade_verdict, 0) + 1
    assert verdicts == {"new": 347, "duplicate": 3, "out_of_order": 1}
