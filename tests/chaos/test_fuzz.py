"""Malformed frames, thousands of them, generated: the decoder never lets an exception escape, and every frame is
either accepted with messages to publish or rejected with a reason."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.normalize import Normalized, Normalizer, Refused
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
