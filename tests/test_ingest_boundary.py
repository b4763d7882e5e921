"""Ingest's hard boundary: every hostile frame is refused with its reason and nothing raises; trading dates are judged
against the feed's own date (a replay, the simulator) or the exchange's (live), with rollovers, weekends and the Tết
break let through."""

from __future__ import annotations

from datetime import date, timedelta

import msgspec
import pytest
from helpers import frame
from hostile import HOSTILE
from test_ssi_decoding import TRADE

from services.ingest.normalize import Normalized, Normalizer, Outgoing, Refused, oversized
from shared.messages import ssi
from shared.messages.domain import Rejection, Trade


def on_the_day(normalizer: Normalizer) -> Normalizer:
    """The normalizer once the feed's date (24/11/2026) is known from a first frame."""
    assert isinstance(normalizer.normalize(frame("X-TRADE", TRADE)), Normalized)
    return normalizer


def trade_on(day: date, total: float = 90000.0) -> bytes:
    return frame("X-TRADE", {**TRADE, "TradingDate": day.strftime("%d/%m/%Y"), "TotalVol": total})


@pytest.mark.parametrize(("reason", "raw"), HOSTILE, ids=[f"{reason}-{i}" for i, (reason, _) in enumerate(HOSTILE)])
def test_every_hostile_frame_is_refused_with_its_reason(reason: str, raw: bytes) -> None:
    result = on_the_day(Normalizer()).normalize(raw)
    assert isinstance(result, Refused), result
    assert result.reason == reason, result.detail
    assert result.message.subject == "md.rejected"
    rejection = msgspec.json.decode(result.message.payload, type=Rejection)
    assert rejection.reason == reason
    assert len(rejection.raw) <= ssi.RAW_KEPT_BYTES


def test_hostile_reasons_are_all_known() -> None:
    assert {reason for reason, _ in HOSTILE} <= {str(reason) for reason in ssi.Reason}


def test_the_feeds_date_moves_on_with_rollovers_weekends_and_tet() -> None:
    normalizer = on_the_day(Normalizer())
    day = date(2026, 11, 24)
    for step in (1, 3, 10, 14):  # next day, over a weekend, over the Tết break, the longest closure
        day += timedelta(days=step)
        assert isinstance(normalizer.normalize(trade_on(day)), Normalized), day
        assert normalizer.feed_date == day
    refused = normalizer.normalize(trade_on(day + timedelta(days=15)))
    assert isinstance(refused, Refused)
    assert refused.reason == "implausible_date"
    assert normalizer.feed_date == day  # a refused date moves nothing


def test_late_frames_of_recent_days_pass_older_ones_do_not() -> None:
    normalizer = on_the_day(Normalizer())
    assert isinstance(normalizer.normalize(trade_on(date(2026, 11, 10))), Normalized)  # 14 days back
    late = normalizer.normalize(trade_on(date(2026, 11, 9)))
    assert isinstance(late, Refused)
    assert late.reason == "implausible_date"
    assert normalizer.feed_date == date(2026, 11, 24)


def test_the_live_feed_is_judged_by_the_exchanges_date() -> None:
    today = date(2026, 11, 24)
    normalizer = Normalizer(today=lambda: today)
    assert isinstance(normalizer.normalize(trade_on(today + timedelta(days=1))), Normalized)  # clocks at midnight
    ahead = normalizer.normalize(trade_on(today + timedelta(days=2), total=95000.0))
    assert isinstance(ahead, Refused)
    assert ahead.reason == "implausible_date"
    first = Normalizer(today=lambda: today).normalize(trade_on(date(2099, 1, 1)))  # no first frame needed
    assert isinstance(first, Refused)


def test_a_failing_decoder_is_a_rejection_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: object) -> tuple:
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(ssi._CHANNELS, "X-TRADE", ssi._Channel("X-TRADE", ssi.XTrade, broken))
    result = Normalizer().normalize(frame("X-TRADE", TRADE))
    assert isinstance(result, Refused)
    assert result.reason == "internal_error"
    assert "a bug" in result.detail


def test_a_frame_too_large_to_publish_is_named() -> None:
    small = Outgoing("md.trade.ACB", b"x" * 10, "id")
    large = Outgoing("md.quote.ACB", b"x" * 2000, "id")
    assert oversized((small,), 1024) is None
    assert "md.quote.ACB" in (oversized((small, large), 1024) or "")


def test_accepted_frames_decode_into_their_bounded_domain_types() -> None:
    result = on_the_day(Normalizer()).normalize(trade_on(date(2026, 11, 25), total=1e10))  # the volume bound
    assert isinstance(result, Normalized)
    trade = msgspec.json.decode(result.messages[0].payload, type=Trade)
    assert trade.total_volume == 10**10
