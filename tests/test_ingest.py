"""The ingest service against a real nats-server: a recorded day replayed publishes exactly the expected messages,
a second replay publishes nothing new, recording then replaying is lossless, bad frames are rejected with their
reason while the service keeps running, and the simulator feeds the same path without a single rejection."""

from __future__ import annotations

import contextlib
import gzip
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
import pytest
from helpers import REPLAY_DAY, eventually, expected_day, frame, run_in_process
from nats.aio.client import Client
from test_ssi_decoding import MALFORMED, TRADE

from services.ingest.normalize import Normalized, Normalizer
from services.ingest.service import Ingest
from services.ingest.sources import Pacer, Reference
from shared import config
from shared.market import EXCHANGE_TZ, is_futures
from shared.messages.domain import IndexBasket, Rejection, SecurityInfo, Trade
from shared.metrics import family_of
from shared.subjects import MARKET, MD_FUTURES_TRADE, MD_TRADE, VN30_BASKET_KEY, Bucket, security_key

pytestmark = pytest.mark.integration


def ingest_settings(settings: config.Settings, **overrides: object) -> config.Settings:
    return msgspec.structs.replace(settings, metrics_port=0, **overrides)


async def subject_counts(nc: Client) -> Counter[str]:
    info = await nc.jetstream().stream_info(MARKET.name, subjects_filter=">")
    counts: Counter[str] = Counter()
    for subject, count in (info.state.subjects or {}).items():
        counts[family_of(subject)] += count
    return counts


async def replay(settings: config.Settings, path: Path, **overrides: object) -> Ingest:
    actor = Ingest()
    task, stop = await run_in_process(actor, ingest_settings(settings, ingest_source="replay", replay_file=str(path),
                                                             replay_speed=0.0, **overrides))
    # a whole simulated day at full speed: its time is the machine's, not a bound under test
    await eventually(lambda: actor.status()["source"] and actor.status()["source"]["finished"], timeout=180)
    stop.set()
    assert await task == 0
    return actor


def expected_unique_messages(path: Path) -> Counter[str]:
    """What JetStream should hold after one replay: every distinct natural key once, by subject family."""
    normalizer, seen, counts = Normalizer(), set(), Counter()
    with path.open("rb") as lines:
        for line in lines:
            result = normalizer.normalize(line)
            messages = result.messages if isinstance(result, Normalized) else (result.message,)
            for message in messages:
                if message.msg_id not in seen:
                    seen.add(message.msg_id)
                    counts[family_of(message.subject)] += 1
    return counts


async def test_replay_publishes_the_day_exactly_once(nc: Client, settings: config.Settings, tmp_path: Path) -> None:
    recording = tmp_path / "recorded.jsonl.gz"
    actor = await replay(settings, REPLAY_DAY, record_file=str(recording))

    expected = expected_day()
    assert actor.frames_read == 1173
    assert actor.frames_published + actor.frames_rejected == actor.frames_read
    assert actor.frames_rejected == 7
    assert actor.rejections == {key.split(":", 1)[1]: n for key, n in expected["counts"].items()
                                if key.startswith("rejected:")}

    counts = await subject_counts(nc)
    assert counts == expected_unique_messages(REPLAY_DAY)
    futures_classes = {key for key in expected["classes"] if key.startswith("VN30F")}
    assert counts["md.trade"] == len(expected["classes"]) - len(futures_classes)  # one message per distinct trade
    assert counts["md.futures.trade"] == len(futures_classes) > 0  # futures trades on their own subjects
    assert counts["md.quote"] + counts["md.futures.quote"] == expected["counts"]["accepted:X-QUOTE"]
    assert counts["md.futures.quote"] > 0
    assert counts["md.rejected"] == 7

    last_trades = {}
    for family in (MD_TRADE, MD_FUTURES_TRADE):
        sub = await nc.jetstream().subscribe(family.wildcard, stream=MARKET.name, ordered_consumer=True)
        for _ in range(counts[family.prefix]):
            trade = msgspec.json.decode((await sub.next_msg(timeout=5)).data, type=Trade)
            assert is_futures(trade.symbol, trade.exchange) == (family is MD_FUTURES_TRADE)
            last_trades[trade.symbol] = max(last_trades.get(trade.symbol, 0), trade.total_volume)
        await sub.unsubscribe()
    assert last_trades == {symbol: int(total) for symbol, total in expected["last_total_vol"].items()}

    basket = msgspec.json.decode((await (await nc.jetstream().key_value(str(Bucket.REFERENCE))).get(VN30_BASKET_KEY)
                                  ).value, type=IndexBasket)
    assert basket.source == "builtin"
    assert len(basket.symbols) == 30

    # The same day again, and the recording of the first run: JetStream drops every message as a duplicate.
    again = await replay(settings, REPLAY_DAY)
    assert again.frames_read == 1173
    assert await subject_counts(nc) == counts
    with gzip.open(recording, "rb") as recorded:
        assert sum(1 for _ in recorded) == 1173
    from_recording = await replay(settings, recording)
    assert from_recording.frames_read == 1173
    assert from_recording.rejections == actor.rejections
    assert await subject_counts(nc) == counts


async def test_futures_aliases_route_codes_nothing_else_names_futures(nc: Client, settings: config.Settings,
                                                                      tmp_path: Path) -> None:
    path = tmp_path / "krx.jsonl"
    unnamed = {**TRADE, "Exchange": None, "MarketId": None, "LastPrice": 1902.5, "Isin": None}
    path.write_bytes(b"".join(frame("X-TRADE", {**unnamed, "Symbol": symbol}) + b"\n"
                              for symbol in ("41I1G3000", "41I1G1000")))
    await replay(settings, path, futures_aliases=["41I1G3000=VN30F2612"])
    subjects = (await nc.jetstream().stream_info(MARKET.name, subjects_filter=">")).state.subjects
    assert subjects == {"md.futures.trade.41I1G3000": 1, "md.trade.41I1G1000": 1}


async def test_bad_frames_are_rejected_and_the_service_keeps_going(nc: Client, settings: config.Settings,
                                                                   tmp_path: Path) -> None:
    path = tmp_path / "malformed.jsonl"
    good = msgspec.json.encode({"DataType": "X-TRADE", "Content": msgspec.json.encode(TRADE).decode()})
    lines = []
    for case in MALFORMED:
        raw, _reason = case.values
        lines += [raw.replace(b"\n", b" ") if raw.strip() else b"", good]
    path.write_bytes(b"\n".join(lines) + b"\n")

    actor = await replay(settings, path)
    expected_reasons = Counter(case.values[1] for case in MALFORMED)
    assert actor.rejections == dict(expected_reasons)
    assert actor.frames_published == len(MALFORMED)  # every good frame between the bad ones went through

    sub = await nc.jetstream().subscribe("md.rejected", stream=MARKET.name, ordered_consumer=True)
    reasons = Counter()
    for _ in range((await subject_counts(nc))["md.rejected"]):
        reasons[msgspec.json.decode((await sub.next_msg(timeout=5)).data, type=Rejection).reason] += 1
    await sub.unsubscribe()
    assert set(reasons) == set(expected_reasons)


async def test_simulator_feeds_the_same_path_without_rejections(nc: Client, settings: config.Settings) -> None:
    actor = Ingest()
    task, stop = await run_in_process(actor, ingest_settings(settings, ingest_source="sim", sim_speed=0.0,
                                                             sim_date="2026-11-24", sim_seed=7))
    await eventually(lambda: actor.frames_read >= 5000)
    stop.set()
    assert await task == 0
    assert actor.frames_rejected == 0
    counts = await subject_counts(nc)
    for family in ("md.trade", "md.quote", "md.index", "md.status"):
        assert counts[family] > 0, family


def test_a_steady_replay_rate_spaces_frames_evenly_whatever_their_exchange_times() -> None:
    """REPLAY_RATE: the frames of one exchange second (SSI stamps to the second) go out 1/rate apart rather than at
    once, and a gap in exchange time is not waited out; by exchange time (REPLAY_SPEED) both are as stamped."""
    second = datetime(2026, 11, 24, 10, 0, 0, tzinfo=EXCHANGE_TZ)
    later = second + timedelta(minutes=5)
    steady = Pacer(1.0, rate=2000.0)
    assert [steady.delay(moment, 100.0) for moment in (second, second, second, later)] == pytest.approx(
        [0.0, 0.0005, 0.001, 0.0015])
    by_time = Pacer(1.0)
    assert [by_time.delay(moment, 100.0) for moment in (second, second, later)] == [0.0, 0.0, 300.0]


def test_replay_without_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="REPLAY_FILE"):
        Ingest.check(config.load({"INGEST_SOURCE": "replay"}))
    with pytest.raises(config.ConfigError, match="no such file"):
        Ingest.check(config.load({"INGEST_SOURCE": "replay", "REPLAY_FILE": str(tmp_path / "missing.jsonl")}))
    with pytest.raises(config.ConfigError, match="SSI_CONSUMER_ID"):
        Ingest.check(config.load({"INGEST_SOURCE": "ssi"}))


class TwoDays:
    """A source whose reference data differs by trading date, as a listing or a basket rebalance makes it."""

    name = "two-days"

    def __init__(self) -> None:
        self.day = date(2026, 11, 24)
        self.asked: list[date] = []

    async def reference(self) -> Reference:
        self.asked.append(self.day)
        return Reference(basket=IndexBasket(index_id="VN30", symbols=["ACB"] if self.day.day == 24 else ["FPT"],
                                            source="config", trading_date=self.day),
                         securities=[SecurityInfo(symbol="ACB", trading_date=self.day, listed_shares=self.day.day)])

    async def frames(self) -> AsyncIterator[bytes]:
        for day in (date(2026, 11, 24), date(2026, 11, 25)):
            self.day = day
            for second in range(3):
                yield frame("X-QUOTE", {"RType": "X-QUOTE", "TradingDate": day.strftime("%d/%m/%Y"),
                                        "Time": f"09:20:0{second}", "Symbol": "ACB", "Exchange": "HOSE",
                                        "BidPrice1": 25_000 + second * 50, "BidVol1": 100})

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"finished": self.day.day == 25}


async def test_a_new_trading_date_brings_its_reference_data(nc: Client, settings: config.Settings) -> None:
    """Reference data is the feed date's: ingest asks its source again when the date moves on (without holding the
    feed back), so the next day's basket and listed shares replace the first day's in KV `reference`."""
    source = TwoDays()
    actor = Ingest(source)
    task, stop = await run_in_process(actor, ingest_settings(settings))
    kv = await nc.jetstream().key_value(str(Bucket.REFERENCE))

    async def second_days() -> bool:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            security = msgspec.json.decode((await kv.get(security_key("ACB"))).value, type=SecurityInfo)
            return security.listed_shares == 25
        return False

    await eventually(second_days)
    basket = msgspec.json.decode((await kv.get(VN30_BASKET_KEY)).value, type=IndexBasket)
    stop.set()
    assert await task == 0
    assert basket.symbols == ["FPT"]
    assert source.asked == [date(2026, 11, 24), date(2026, 11, 25)]  # at start, then once for the new date
