"""Vietnamese market rules: phases, exchange time, tick sizes, price limits, lots, VN30F contracts, index ids."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest

from shared.market import (
    EXCHANGE_TZ,
    Exchange,
    InstrumentKind,
    Phase,
    contract_code,
    contract_expiry,
    exchange_datetime,
    front_month,
    is_futures,
    is_odd_lot,
    is_on_tick,
    is_trading,
    is_vn30_future,
    last_trading_day,
    listed_contracts,
    normalize_index_id,
    parse_clock,
    parse_contract,
    parse_exchange,
    parse_trading_date,
    phase_at,
    price_limits,
    resolve_contract_alias,
    session_phase,
    third_thursday,
    tick_size,
    to_exchange_time,
)

TUESDAY = date(2026, 11, 24)
UTC_TZ = UTC


def at(clock: str, day: date = TUESDAY) -> datetime:
    return exchange_datetime(day, parse_clock(clock))


# --- tick sizes: every band edge -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "tick"),
    [(10, 10), (9_990, 10), (9_999.99, 10), (10_000, 50), (10_050, 50), (49_950, 50), (49_999, 50),
     (50_000, 100), (50_100, 100), (250_000, 100)],
)
def test_hose_stock_tick_bands(price: float, tick: int) -> None:
    assert tick_size(Exchange.HOSE, price) == tick


@pytest.mark.parametrize("price", [5_000, 10_000, 60_000])
def test_hose_etf_and_covered_warrant_tick_is_10(price: float) -> None:
    assert tick_size(Exchange.HOSE, price, InstrumentKind.ETF) == 10
    assert tick_size(Exchange.HOSE, price, InstrumentKind.COVERED_WARRANT) == 10


@pytest.mark.parametrize("exchange", [Exchange.HNX, Exchange.UPCOM])
@pytest.mark.parametrize("price", [5_000, 10_000, 49_950, 50_000, 120_000])
def test_hnx_and_upcom_tick_is_100(exchange: Exchange, price: float) -> None:
    assert tick_size(exchange, price) == 100


def test_futures_tick_is_a_tenth_of_a_point() -> None:
    assert tick_size(Exchange.DER, 1906.9) == Decimal("0.1")
    assert tick_size(Exchange.HOSE, 1906.9, InstrumentKind.FUTURE) == Decimal("0.1")


@pytest.mark.parametrize(
    ("price", "valid"),
    [(9_990, True), (9_995, False), (10_000, True), (10_020, False), (10_050, True), (49_950, True),
     (50_050, False), (50_100, True)],
)
def test_is_on_tick(price: float, valid: bool) -> None:
    assert is_on_tick(Exchange.HOSE, price) is valid


# --- ceiling and floor ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "ref", "ceiling", "floor"),
    [
        (Exchange.HOSE, 24_500, 26_200, 22_800),  # 26,215 down to 26,200; 22,785 up to 22,800 (sample day, ACB)
        (Exchange.HOSE, 118_600, 126_900, 110_300),  # sample day, FPT
        (Exchange.HOSE, 45_300, 48_450, 42_150),  # sample day, BID: exact on the 50 tick
        (Exchange.HOSE, 9_500, 10_150, 8_840),  # ceiling crosses into the 50 band, floor stays on the 10 tick
        (Exchange.HOSE, 47_000, 50_200, 43_750),  # 50,290 into the 100 band
        (Exchange.HOSE, 10_700, 11_400, 9_960),  # floor 9,951 into the 10 band, rounded up
        (Exchange.HOSE, 53_700, 57_400, 49_950),  # floor 49,941 up to 49,950: on the 50 tick of its band
        (Exchange.HNX, 10_000, 11_000, 9_000),
        (Exchange.HNX, 12_345, 13_500, 11_200),
        (Exchange.UPCOM, 12_300, 14_100, 10_500),  # 14,145 down, 10,455 up
        (Exchange.DER, 1906.9, 2040.3, 1773.5),  # VN30F2612 on the sample day
    ],
)
def test_price_limits(exchange: Exchange, ref: float, ceiling: float, floor: float) -> None:
    assert price_limits(exchange, ref) == (ceiling, floor)


def test_limits_always_land_on_a_valid_tick_inside_the_band() -> None:
    for ref in range(1_000, 200_001, 10):
        ceiling, floor = price_limits(Exchange.HOSE, ref)
        assert is_on_tick(Exchange.HOSE, ceiling), ref
        assert is_on_tick(Exchange.HOSE, floor), ref
        assert floor <= ref <= ceiling
        assert ceiling <= ref * 1.07 + 1e-9
        assert floor >= ref * 0.93 - 1e-9


def test_first_trading_day_limits() -> None:
    assert price_limits(Exchange.HOSE, 20_000, first_trading_day=True) == (24_000, 16_000)
    assert price_limits(Exchange.HNX, 20_000, first_trading_day=True) == (26_000, 14_000)
    assert price_limits(Exchange.UPCOM, 20_000, first_trading_day=True) == (28_000, 12_000)


def test_board_lot() -> None:
    assert not is_odd_lot(100)
    assert not is_odd_lot(12_300)
    assert is_odd_lot(99)
    assert is_odd_lot(150)


# --- phases ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clock", "phase"),
    [("08:59:59", Phase.PRE_OPEN), ("09:00:00", Phase.ATO), ("09:14:59", Phase.ATO), ("09:15:00", Phase.CONTINUOUS),
     ("11:29:59", Phase.CONTINUOUS), ("11:30:00", Phase.LUNCH), ("12:59:59", Phase.LUNCH),
     ("13:00:00", Phase.CONTINUOUS), ("14:30:00", Phase.ATC), ("14:44:59", Phase.ATC),
     ("14:45:00", Phase.POST_CLOSE), ("15:00:00", Phase.CLOSED), ("23:00:00", Phase.CLOSED)],
)
def test_hose_phases(clock: str, phase: Phase) -> None:
    assert phase_at(Exchange.HOSE, at(clock)) is phase


@pytest.mark.parametrize(
    ("clock", "phase"),
    [("09:00:00", Phase.CONTINUOUS), ("11:30:00", Phase.LUNCH), ("14:30:00", Phase.ATC),
     ("14:45:00", Phase.POST_CLOSE), ("15:00:00", Phase.CLOSED)],
)
def test_hnx_phases(clock: str, phase: Phase) -> None:
    assert phase_at(Exchange.HNX, at(clock)) is phase


@pytest.mark.parametrize(
    ("clock", "phase"),
    [("08:59:00", Phase.PRE_OPEN), ("09:00:00", Phase.CONTINUOUS), ("14:30:00", Phase.CONTINUOUS),
     ("14:59:59", Phase.CONTINUOUS), ("15:00:00", Phase.CLOSED)],
)
def test_upcom_phases_have_no_auctions(clock: str, phase: Phase) -> None:
    assert phase_at(Exchange.UPCOM, at(clock)) is phase


@pytest.mark.parametrize(
    ("clock", "phase"),
    [("08:44:59", Phase.PRE_OPEN), ("08:45:00", Phase.ATO), ("09:00:00", Phase.CONTINUOUS),
     ("14:30:00", Phase.ATC), ("14:45:00", Phase.CLOSED)],
)
def test_vn30f_phases_open_at_0845(clock: str, phase: Phase) -> None:
    assert phase_at(Exchange.DER, at(clock)) is phase


def test_weekends_are_closed() -> None:
    saturday = date(2026, 11, 28)
    assert phase_at(Exchange.HOSE, at("10:00:00", saturday)) is Phase.CLOSED
    assert not is_trading(Exchange.HOSE, at("10:00:00", saturday))
    assert is_trading(Exchange.HOSE, at("10:00:00"))
    assert not is_trading(Exchange.HOSE, at("12:00:00"))


def test_phase_uses_exchange_time_whatever_the_input_zone() -> None:
    utc_0215 = datetime(2026, 11, 24, 2, 15, tzinfo=UTC_TZ)
    assert phase_at(Exchange.HOSE, utc_0215) is Phase.CONTINUOUS  # 09:15 in Hanoi


@pytest.mark.parametrize(
    ("code", "phase"),
    [("ATO", Phase.ATO), ("LO", Phase.CONTINUOUS), ("atc", Phase.ATC), ("PT", Phase.POST_CLOSE),
     ("BREAK", Phase.LUNCH), ("C", Phase.CLOSED), (None, None), ("", None), ("WHAT", None)],
)
def test_session_codes(code: str | None, phase: Phase | None) -> None:
    assert session_phase(code) is phase


def test_exchange_codes() -> None:
    assert parse_exchange("HOSE") is Exchange.HOSE
    assert parse_exchange("derivatives") is Exchange.DER
    assert parse_exchange("HNXBOND") is None
    assert parse_exchange(None) is None


# --- exchange time -------------------------------------------------------------------------------------------------


def test_trading_date_formats() -> None:
    assert parse_trading_date("24/11/2026") == TUESDAY
    assert parse_trading_date("2026-11-24") == TUESDAY
    assert parse_trading_date("24112026") == TUESDAY
    with pytest.raises(ValueError, match="unreadable"):
        parse_trading_date("11/24")
    with pytest.raises(ValueError, match="day is out of range"):
        parse_trading_date("31/02/2026")


def test_clock_formats() -> None:
    assert parse_clock("09:15:03") == time(9, 15, 3)
    assert parse_clock("091503") == time(9, 15, 3)
    assert parse_clock("9:15:03") == time(9, 15, 3)
    with pytest.raises(ValueError, match="unreadable"):
        parse_clock("9h15")


def test_exchange_time_is_utc_plus_7() -> None:
    moment = exchange_datetime(TUESDAY, time(9, 15))
    assert moment.utcoffset() == timedelta(hours=7)
    assert moment.astimezone(UTC_TZ) == datetime(2026, 11, 24, 2, 15, tzinfo=UTC_TZ)
    assert to_exchange_time(datetime(2026, 11, 24, 2, 15, tzinfo=UTC_TZ)) == moment
    assert to_exchange_time(datetime(2026, 11, 24, 9, 15)) == moment
    assert moment.tzinfo is EXCHANGE_TZ


# --- VN30F contracts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("year", "month", "day"),
    [(2026, 11, 19), (2026, 12, 17), (2026, 3, 19), (2024, 7, 18), (2025, 1, 16), (2026, 10, 15)],
)
def test_third_thursday(year: int, month: int, day: int) -> None:
    assert third_thursday(year, month) == date(year, month, day)
    assert third_thursday(year, month).weekday() == 3


def test_a_holiday_moves_the_last_trading_day_earlier() -> None:
    assert last_trading_day(2026, 11) == date(2026, 11, 19)
    assert last_trading_day(2026, 11, frozenset({date(2026, 11, 19)})) == date(2026, 11, 18)


@pytest.mark.parametrize(
    ("today", "front"),
    [
        (date(2026, 11, 18), "VN30F2611"),  # before the expiry day
        (date(2026, 11, 19), "VN30F2611"),  # on it: still the front month
        (date(2026, 11, 20), "VN30F2612"),  # the day after
        (date(2026, 11, 24), "VN30F2612"),  # the sample day
        (date(2026, 12, 17), "VN30F2612"),
        (date(2026, 12, 18), "VN30F2701"),  # across the year end
        (date(2026, 12, 1), "VN30F2612"),
    ],
)
def test_front_month_across_an_expiry_day(today: date, front: str) -> None:
    assert front_month(today) == front


def test_front_month_with_a_holiday_on_the_third_thursday() -> None:
    holiday = frozenset({date(2026, 11, 19)})
    assert front_month(date(2026, 11, 18), holiday) == "VN30F2611"
    assert front_month(date(2026, 11, 19), holiday) == "VN30F2612"


@pytest.mark.parametrize(
    ("today", "listed"),
    [
        (date(2026, 11, 24), ["VN30F2612", "VN30F2701", "VN30F2703", "VN30F2706"]),
        (date(2026, 11, 19), ["VN30F2611", "VN30F2612", "VN30F2703", "VN30F2706"]),
        (date(2026, 2, 20), ["VN30F2603", "VN30F2604", "VN30F2606", "VN30F2609"]),
        (date(2026, 5, 25), ["VN30F2606", "VN30F2607", "VN30F2609", "VN30F2612"]),
    ],
)
def test_listed_contracts(today: date, listed: list[str]) -> None:
    assert listed_contracts(today) == listed


def test_generic_aliases() -> None:
    assert resolve_contract_alias("VN30F1M", TUESDAY) == "VN30F2612"
    assert resolve_contract_alias("VN30F2M", TUESDAY) == "VN30F2701"
    assert resolve_contract_alias("VN30F1Q", TUESDAY) == "VN30F2703"
    assert resolve_contract_alias("VN30F2Q", TUESDAY) == "VN30F2706"
    assert resolve_contract_alias("ACB", TUESDAY) == "ACB"


def test_contract_codes() -> None:
    assert parse_contract("VN30F2612") == (2026, 12)
    assert parse_contract("vn30f2703") == (2027, 3)
    assert parse_contract("VN30F2613") is None
    assert parse_contract("41I1G3000") is None
    assert contract_code(2027, 1) == "VN30F2701"
    assert contract_expiry("VN30F2612") == date(2026, 12, 17)
    assert contract_expiry("ACB") is None
    assert is_vn30_future("VN30F2612")
    assert is_vn30_future("VN30F1M")
    assert not is_vn30_future("VN30")


def test_futures_by_code_or_by_exchange() -> None:
    assert not is_futures("ACB", "HOSE")
    assert not is_futures("E1VFVN30", "HOSE")  # an ETF on VN30 is a stock
    assert is_futures("VN30F2612", "DERIVATIVES")
    assert is_futures("41I1G3000", "DERIVATIVES")  # a post-KRX code: only the exchange tells
    assert is_futures("VN30F1M", None)
    assert not is_futures("41I1G3000", None)  # unknown: ingest's FUTURES_ALIASES and reference data add such codes


# --- index ids -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("VNINDEX", "VNINDEX"), ("VNIndex", "VNINDEX"), ("vnindex", "VNINDEX"), ("HNXIndex", "HNXINDEX"),
     ("HNXUpcomIndex", "UPCOMINDEX"), ("VN30", "VN30"), (" vn100 ", "VN100"), ("HNX30", "HNX30")],
)
def test_index_ids_are_normalized(raw: str, canonical: str) -> None:
    assert normalize_index_id(raw) == canonical
