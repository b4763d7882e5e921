"""The live SSI source, through the real `ssi-fc-data` client, against a fake SSI server speaking the real protocol:
a scripted day ingested across a server-side disconnect and a dead link (the watchdog reconnects, nothing is lost or
counted twice, the gap's minute bars come back over REST), and bad credentials stop the service with a clear error."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fake_ssi import FakeSsi
from helpers import REPLAY_DAY, eventually, run_in_process
from nats.aio.client import Client
from test_ingest import expected_unique_messages, subject_counts

from services.ingest.service import Ingest
from services.ingest.ssi_live import SsiSource, channel_order_warning
from shared import config
from shared.market import DEFAULT_VN30_BASKET, exchange_now
from shared.messages.domain import Bar, IndexBasket, SecurityInfo
from shared.runtime import EXIT_CONFIG
from shared.subjects import MARKET, VN30_BASKET_KEY, Bucket, basket_key, security_key

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
BASKET = sorted(DEFAULT_VN30_BASKET)[::-1]  # any order but the built-in one, to see whose basket is stored


def live_settings(settings: config.Settings, fake: FakeSsi, **overrides: object) -> config.Settings:
    return msgspec.structs.replace(
        settings, metrics_port=0, ingest_source="ssi", ssi_url=fake.url, ssi_stream_url=fake.url,
        ssi_consumer_id=fake.consumer_id, ssi_consumer_secret=fake.consumer_secret, ssi_channels=["X:ALL"],
        ssi_watchdog_s=1.0, **overrides,
    )


async def test_scripted_day_across_a_disconnect_and_a_dead_link(nc: Client, settings: config.Settings) -> None:
    lines = [line.rstrip(b"\n").decode() for line in REPLAY_DAY.open("rb")]
    async with FakeSsi(keepalive_s=0.2) as fake:
        fake.index_components = {"VN30": BASKET, "HNX30": ["PVS", "SHS", "CEO"]}
        fake.securities_details = [
            {"Isin": "VN000000ACB4", "Symbol": "ACB", "SymbolName": "Ngan hang TMCP A Chau", "SecType": "ST",
             "MarketId": "HOSE", "Exchange": "HOSE", "LotSize": "100", "ListedShare": "4466657912",
             "LastTradingDate": ""},
            {"Isin": "VN30F2612", "Symbol": "VN30F2612", "SymbolName": "VN30F2612", "SecType": "FU",
             "MarketId": "DER", "Exchange": "HNX", "LotSize": "1", "Underlying": "VN30",
             "LastTradingDate": "17/12/2026"},
        ]
        run = live_settings(settings, fake)
        source = SsiSource(run, market_open=lambda: True)
        actor = Ingest(source)
        task, stop = await run_in_process(actor, run)

        await fake.wait_for_clients(1)
        assert fake.subscriptions == ["X:ALL"]
        first, second, third = lines[:400], lines[400:800], lines[800:]
        await fake.push(*first)
        await eventually(lambda: actor.frames_read == len(first))

        await fake.drop_connections()  # SSI closes the socket: the client never reconnects by itself
        await fake.wait_for_clients(1)
        await fake.push(*first[-50:], *second)  # after a reconnect some frames come again: counted once
        await eventually(lambda: actor.frames_read == len(first) + 50 + len(second))

        now = exchange_now()  # SSI keeps minute bars of the gap: one for ACB, stamped inside it
        fake.intraday_bars = [{"Symbol": "ACB", "Value": "24500", "TradingDate": now.strftime("%d/%m/%Y"),
                               "Time": now.strftime("%H:%M:%S"), "Open": "24500", "High": "24600", "Low": "24450",
                               "Close": "24500", "Volume": "12300"}]
        fake.go_silent()  # the link dies without a close: only the watchdog can tell
        connections = fake.connections_total
        await eventually(lambda: fake.connections_total > connections, timeout=15)
        fake.speak_again()
        await fake.wait_for_clients(1)
        await fake.push(*third)
        await eventually(lambda: actor.frames_read >= len(first) + 50 + len(second) + len(third) + 1)

        assert source.reconnects == 2
        assert fake.connections_total == 3
        assert len(set(fake.tokens_issued)) >= 3  # each reconnect with a fresh token
        stop.set()
        assert await task == 0

    counts = await subject_counts(nc)
    expected = expected_unique_messages(REPLAY_DAY)
    expected["md.bar"] += 1  # the gap's minute bar, fetched over REST after the dead link
    resent_quotes = sum(1 for line in first[-50:] if '"X-QUOTE"' in line or '"X-Quote"' in line)
    assert counts["md.quote"] <= expected["md.quote"] + resent_quotes  # book states: a resent one is harmless
    assert {family: n for family, n in counts.items() if family != "md.quote"} == \
           {family: n for family, n in expected.items() if family != "md.quote"}  # nothing counted twice

    js = nc.jetstream()
    basket = msgspec.json.decode((await (await js.key_value(str(Bucket.REFERENCE))).get(VN30_BASKET_KEY)).value,
                                 type=IndexBasket)
    assert (basket.source, basket.symbols) == ("ssi", BASKET)
    reference = await js.key_value(str(Bucket.REFERENCE))
    hnx30 = msgspec.json.decode((await reference.get(basket_key("HNX30"))).value, type=IndexBasket)
    assert (hnx30.index_id, hnx30.source, hnx30.symbols) == ("HNX30", "ssi", ["PVS", "SHS", "CEO"])
    future = msgspec.json.decode((await reference.get(security_key("VN30F2612"))).value, type=SecurityInfo)
    assert (future.sec_type, future.underlying, future.last_trading_date) == ("FU", "VN30", date(2026, 12, 17))
    assert future.listed_shares is None  # not sent
    stock = msgspec.json.decode((await reference.get(security_key("ACB"))).value, type=SecurityInfo)
    assert (stock.exchange, stock.lot_size, stock.listed_shares) == ("HOSE", 100, 4_466_657_912)
    acb_bars = (await js.stream_info(MARKET.name, subjects_filter="md.bar.ACB")).state.subjects["md.bar.ACB"]
    sub = await js.subscribe("md.bar.ACB", stream=MARKET.name, ordered_consumer=True)
    intervals: Counter[int | None] = Counter()
    for _ in range(acb_bars):
        intervals[msgspec.json.decode((await sub.next_msg(timeout=5)).data, type=Bar).interval_s] += 1
    await sub.unsubscribe()
    assert intervals[60] == 1  # the minute bar from REST; the rest are SSI's per-match bars
    assert intervals[None] == acb_bars - 1


async def test_bad_credentials_stop_the_service_with_a_clear_error(nats_url: str) -> None:
    async with FakeSsi() as fake:
        env = {**os.environ, "NATS_URL": nats_url, "METRICS_PORT": "0", "INGEST_SOURCE": "ssi",
               "SSI_URL": fake.url, "SSI_STREAM_URL": fake.url, "SSI_CONSUMER_ID": "wrong",
               "SSI_CONSUMER_SECRET": "nope"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.ingest", env=env, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == EXIT_CONFIG  # found only once ingest asks SSI for a token: still configuration
    assert stderr.decode().strip().splitlines()[-1] == (
        "stocktracker ingest: cannot start: SSI rejected the credentials (SSI_CONSUMER_ID/SECRET): "
        "The connection is invalid"
    )
    assert fake.connections_total == 0  # never streamed without a token


async def test_the_bearer_token_stays_out_of_the_output(nats_url: str, reap: Any) -> None:
    async with FakeSsi() as fake:
        fake.index_components = {"VN30": BASKET}
        env = {**os.environ, "NATS_URL": nats_url, "METRICS_PORT": "0", "INGEST_SOURCE": "ssi",
               "SSI_URL": fake.url, "SSI_STREAM_URL": fake.url, "SSI_CONSUMER_ID": fake.consumer_id,
               "SSI_CONSUMER_SECRET": fake.consumer_secret, "SSI_CHANNELS": "X:ALL"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.ingest", env=env, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        reap(process)
        await fake.wait_for_clients(1, timeout=30)
        process.terminate()
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    output = stdout.decode() + stderr.decode()
    assert fake.tokens_issued
    for token in fake.tokens_issued:
        assert token not in output
    assert "Bearer" not in output


@pytest.mark.parametrize(("channels", "warned"), [
    (["X:ALL", "R:ALL"], False),  # the default: trades and their books in one channel, in order
    (["X-TRADE:ALL", "X-QUOTE:ALL", "R:ALL"], True),
    (["x-trade:ACB", "x-quote:ACB"], True),
    (["X-TRADE:ALL"], False),  # trades alone: no book to be out of order with
])
def test_separate_trade_and_quote_channels_are_said_to_make_the_split_approximate(channels: list[str],
                                                                                 warned: bool) -> None:
    warning = channel_order_warning(channels)
    assert (warning is not None) is warned
    if warning:
        assert "approximate" in warning
