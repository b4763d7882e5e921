"""Malformed frames, thousands of them, generated: the decoder never lets an exception escape, and every frame is
either accepted with messages to publish or rejected with a reason. Then frames of the right shape carrying hostile
values (numeric strings, huge and non-finite numbers, deep nesting, huge strings, extreme dates and clocks, control
characters): whatever is accepted decodes into its bounded domain type and encodes back to the very same bytes."""

from __future__ import annotations

import json
from datetime import date

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.normalize import Normalized, Normalizer, Refused
from shared.messages.domain import Bar, ForeignRoom, IndexUpdate, Quote, SecurityStatus, Trade
from shared.messages.ssi import DATA_TYPES, Reason

FIELDS = ["Symbol", "TradingDate", "Time", "LastPrice", "LastVol", "TotalVol", "TotalVal", "RefPrice", "Ceiling",
          "Floor", "Side", "TradingSession", "BidPrice1", "BidVol1", "AskPrice1", "AskVol1", "BuyVol", "SellVol",
          "BuyVal", "SellVal", "FBuyVol", "IndexId", "IndexValue", "Advances", "Open", "High", "Low", "Close",
          "Volume", "RType", "Rtype", "Exchange", "TradingTime"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["24/11/2026", "09:15:00", "ACB", "VN30", "BU", "LO",
                                                           "100.0", "-5", "1e309", "NaN", ""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                                           inner, max_size=3),
                      max_leaves=6)
contents = st.dictionaries(st.sampled_from(FIELDS), values, max_size=12)
data_types = st.one_of(st.sampled_from([*DATA_TYPES, "x-quote", "Trade", "OL", "ZZ"]), st.none(), st.integers(),
                       st.text(max_size=8))


def envelope(draw: st.DrawFn) -> bytes:
    shape = draw(st.integers(0, 5))
    content = draw(contents)
    if shape == 0:
        return draw(st.binary(max_size=64))
    if shape == 1:
        return json.dumps(draw(values)).encode()
    body = {"DataType": draw(data_types)}
    if shape == 2:
        body["Content"] = json.dumps(content)
    elif shape == 3:
        body["Content"] = content
    elif shape == 4:
        body["content"] = draw(st.text(max_size=40))
    return json.dumps(body, default=str).encode()


frames = st.composite(envelope)()
KNOWN_REASONS = {str(reason) for reason in Reason}


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=5))
def test_every_frame_is_published_or_rejected_with_a_reason(batch: list[bytes]) -> None:
    normalizer = Normalizer()
    for frame in batch:
        result = normalizer.normalize(frame)
        if isinstance(result, Refused):
            assert result.reason in KNOWN_REASONS or result.reason.startswith("neg_")
            assert result.message.subject == "md.rejected"
        else:
            assert isinstance(result, Normalized)
            assert result.messages
            assert all(message.msg_id and message.payload for message in result.messages)


# --- frames of the right shape with hostile values: every accepted one must be exactly its domain type -----------

TEMPLATES = {
    "X-TRADE": {"TradingDate": "24/11/2026", "Time": "10:00:00", "Symbol": "ACB", "Exchange": "HOSE",
                "LastPrice": 24600.0, "LastVol": 100.0, "TotalVol": 5000.0, "TotalVal": 1.2e8, "RefPrice": 24550.0,
                "TradingSession": "LO", "Side": "BU", "AvgPrice": 24580.0, "Change": 50.0, "RatioChange": 0.2},
    "X": {"TradingDate": "24/11/2026", "Time": "10:00:00", "Symbol": "VN30F2612", "Exchange": "DERIVATIVES",
          "LastPrice": 1905.4, "LastVol": 5.0, "TotalVol": 500.0, "BidPrice1": 1905.3, "BidVol1": 10.0,
          "AskPrice1": 1905.5, "AskVol1": 12.0, "BidPrice10": 1904.4, "AskVol10": 3.0},
    "R": {"TradingDate": "24/11/2026", "Time": "10:00:00", "Symbol": "FPT", "BuyVol": 1000.0, "SellVol": 200.0,
          "BuyVal": 9.8e7, "SellVal": 1.9e7, "TotalRoom": 1.7e9, "CurrentRoom": 5.6e8},
    "MI": {"IndexId": "VN30", "TradingDate": "24/11/2026", "Time": "10:00:00", "IndexValue": 1902.35,
           "TotalQtty": 3.5e8, "TotalValue": 1.0e13, "Advances": 12, "Declines": 10, "NoChanges": 8},
    "B": {"TradingDate": "24/11/2026", "Time": "10:00:00", "Symbol": "ACB", "Open": 24550.0, "High": 24600.0,
          "Low": 24500.0, "Close": 24550.0, "Volume": 2900.0},
    "F": {"TradingDate": "24/11/2026", "Time": "09:00:00", "Symbol": "ACB", "TradingSession": "ATO",
          "TradingStatus": "N"},
}
KINDS = {"md.trade": Trade, "md.futures.trade": Trade, "md.quote": Quote, "md.futures.quote": Quote,
         "md.foreign": ForeignRoom, "md.index": IndexUpdate, "md.bar": Bar, "md.status": SecurityStatus}

numeric_strings = st.one_of(
    st.sampled_from(["inf", "-inf", "Infinity", "-Infinity", "NaN", "nan", "1e309", "-1e309", "1e-400", "0x10",
                     " 42 ", "1_000", "+5", "-0", "", "1e15", "9" * 400, "0" * 5000 + "1"]),
    st.floats().map(repr), st.integers(-10**40, 10**40).map(str))
huge_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**40, 10**40),
                         st.sampled_from([1e15, 1e300, -1e300, 5e-324, 1e10, 1e10 + 1, 1e8, 1e8 + 1]))
extreme_dates = st.one_of(
    st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(lambda d: f"{d.day:02d}/{d.month:02d}/"
                                                                                   f"{d.year:04d}"),
    st.sampled_from(["31/02/2026", "00/01/2026", "29/02/2027", "24/13/2026", "2026-11-24", "24112026", "99/99/9999",
                     "01/01/0000", "24/11/2026 10:00:00"]))
clocks = st.one_of(st.times().map(lambda t: t.strftime("%H:%M:%S")),
                   st.sampled_from(["24:00:00", "23:59:60", "9:5:3", "091503", "10:00:00.123456", "-1:00:00"]))
controls = st.text(alphabet=st.characters(categories=["Cc"]), min_size=1, max_size=3)
texts = st.one_of(st.text(max_size=8), controls.map(lambda c: f"L{c}O"),
                  st.sampled_from([63, 64, 65, 1000, 70_000]).map(lambda n: "x" * n))
nestings = st.integers(1, 3000).map(lambda n: "[" * n + "1" + "]" * n)


@st.composite
def hostile_frame(draw: st.DrawFn) -> bytes:
    data_type = draw(st.sampled_from(sorted(TEMPLATES)))
    content: dict[str, object] = dict(TEMPLATES[data_type])
    numeric = [key for key, value in content.items() if isinstance(value, float | int)]
    for key in draw(st.lists(st.sampled_from(numeric), max_size=3, unique=True)) if numeric else ():
        content[key] = draw(st.one_of(numeric_strings, huge_numbers))
    if draw(st.booleans()):
        content["TradingDate"] = draw(extreme_dates)
    if draw(st.booleans()):
        content["Time"] = draw(clocks)
    textual = [key for key, value in content.items() if isinstance(value, str) and key not in ("TradingDate", "Time")]
    for key in draw(st.lists(st.sampled_from(textual), max_size=2, unique=True)):
        content[key] = draw(texts)
    body = json.dumps(content, allow_nan=True)
    if draw(st.integers(0, 9)) == 0:  # a nested value where a scalar belongs
        body = body[:-1] + ', "Deep": ' + draw(nestings) + "}"
    layered = draw(st.booleans())
    envelope = {"DataType": data_type, "Content": body if layered else "__CONTENT__"}
    raw = json.dumps(envelope)
    return (raw if layered else raw.replace('"__CONTENT__"', body)).encode()


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile_frame(), min_size=1, max_size=4))
def test_hostile_values_are_refused_and_whatever_is_accepted_is_exactly_its_domain_type(batch: list[bytes]) -> None:
    normalizer = Normalizer()
    for raw in batch:
        result = normalizer.normalize(raw)
        if isinstance(result, Refused):
            assert result.reason in KNOWN_REASONS or result.reason.startswith("neg_"), result
            assert result.reason != "internal_error", result.detail
            continue
        for message in result.messages:
            kind = KINDS[message.subject.rpartition(".")[0]]
            decoded = msgspec.json.decode(message.payload, type=kind)  # bounded: no inf, NaN or magnitude beyond
            assert msgspec.json.encode(decoded) == message.payload
            assert date(2000, 1, 1) <= decoded.trading_date <= date(2099, 12, 31)
            texts_of = [value for value in msgspec.structs.astuple(decoded) if isinstance(value, str)]
            assert not any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f for text in texts_of for ch in text)
