"""The bus against a real nats-server: topology, ordered deduplicated publishing (across a server restart),
consuming from a stream position, and watching a KV bucket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StorageType

from launcher.local import NatsServer
from shared import bus, config, metrics
from shared.bus.publisher import PUBLISH_REORDERED, PUBLISH_SUPERSEDED
from shared.messages.domain import IndexBasket
from shared.subjects import DERIVED, MARKET, MD_QUOTE, MD_TRADE, STREAMS, Bucket

pytestmark = pytest.mark.integration


async def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_topology_is_created_idempotently(nc: Client, settings: config.Settings) -> None:
    js = nc.jetstream()
    await bus.ensure_topology(js, settings)  # a second service starting finds everything in place
    for spec in STREAMS:
        info = await js.stream_info(spec.name)
        assert info.config.subjects == list(spec.subjects)
        assert info.config.duplicate_window == settings.dedup_window_s
    for bucket in Bucket:
        status = await (await js.key_value(str(bucket))).status()
        assert status.bucket == str(bucket)


async def test_changed_settings_update_existing_streams(nc: Client, settings: config.Settings) -> None:
    js = nc.jetstream()
    longer = msgspec.structs.replace(settings, stream_max_age_days=30.0)
    await bus.ensure_topology(js, longer)
    assert (await js.stream_info(MARKET.name)).config.max_age == 30 * 86400


async def test_publisher_drops_a_resent_natural_key(nc: Client) -> None:
    publisher = bus.Publisher(nc)
    await publisher.start()
    await publisher.publish(MD_TRADE("ACB"), b'{"n":1}', msg_id="2026-11-24:ACB:100")
    await publisher.publish(MD_TRADE("ACB"), b'{"n":1}', msg_id="2026-11-24:ACB:100")
    await publisher.publish(MD_TRADE("ACB"), b'{"n":2}', msg_id="2026-11-24:ACB:200")
    assert await publisher.stop(timeout=5)
    info = await nc.jetstream().stream_info(MARKET.name)
    assert info.state.messages == 2


async def test_consume_from_a_position_in_stream_order_across_subjects(nc: Client) -> None:
    publisher = bus.Publisher(nc)
    await publisher.start()
    for n in range(10):
        subject = MD_TRADE("ACB") if n % 2 else MD_QUOTE("ACB")
        await publisher.publish(subject, str(n).encode(), msg_id=f"m{n}")
    await publisher.publish("md.foreign.ACB", b"other", msg_id="f")
    await publisher.stop()

    received: list[tuple[int, str, bytes]] = []

    async def handle(subject: str, payload: bytes, position: bus.Delivery) -> None:
        received.append((position.stream_sequence, subject, payload))

    reader = await bus.consume_from(nc.jetstream(), MARKET, [MD_TRADE.wildcard, MD_QUOTE.wildcard], handle,
                                    start_sequence=4)
    await wait_until(lambda: len(received) == 7)
    await asyncio.sleep(0.2)
    assert reader.backlog == 0  # md.foreign.ACB, the last message, was read and dropped
    await reader.stop()
    assert [seq for seq, _, _ in received] == [4, 5, 6, 7, 8, 9, 10]
    assert [data for _, _, data in received] == [b"3", b"4", b"5", b"6", b"7", b"8", b"9"]
    assert received[0][1] == "md.trade.ACB"


async def test_a_sparse_reader_has_the_server_filter_its_subjects_exactly(nc: Client) -> None:
    """A reader of a small share of the stream (the derivatives tracker's futures and VN30) asks for its subjects
    themselves: the server delivers only those, in stream order, from the position asked, and again after its
    consumer is re-created."""
    wanted = ["md.futures.trade.*", "md.index.VN30"]
    publisher = bus.Publisher(nc)
    await publisher.start()
    subjects = ["md.trade.ACB", "md.futures.trade.VN30F2612", "md.quote.ACB", "md.index.VN30", "md.index.VNINDEX"]
    for n in range(50):
        await publisher.publish(subjects[n % len(subjects)], str(n).encode(), msg_id=f"s{n}")
    assert await publisher.stop(timeout=10)
    received: list[tuple[int, str]] = []

    async def handle(subject: str, payload: bytes, position: bus.Delivery) -> None:
        received.append((position.stream_sequence, subject))

    js = nc.jetstream()
    reader = bus.StreamReader(js, MARKET, wanted, handle, start_sequence=10, heartbeat_s=0.25, sparse=True)
    await reader.start()
    expected = [(n + 1, subjects[n % len(subjects)]) for n in range(9, 50) if n % len(subjects) in (1, 3)]
    await wait_until(lambda: len(received) == len(expected))
    (consumer,) = await js.consumers_info(MARKET.name)
    assert consumer.config.filter_subjects == wanted
    assert received == expected
    await js.delete_consumer(MARKET.name, consumer.name)
    publisher = bus.Publisher(nc)
    await publisher.start()
    for n in range(50, 60):
        await publisher.publish(subjects[n % len(subjects)], str(n).encode(), msg_id=f"s{n}")
    assert await publisher.stop(timeout=10)
    expected += [(n + 1, subjects[n % len(subjects)]) for n in range(50, 60) if n % len(subjects) in (1, 3)]
    await wait_until(lambda: len(received) == len(expected), timeout=30)
    await reader.stop()
    assert received == expected
    assert reader.recreated == 1


async def test_bucket_watch_loads_then_follows(nc: Client) -> None:
    js = nc.jetstream()
    kv = await js.key_value(str(Bucket.PRICES))
    await kv.put("ACB", b"1")
    await kv.put("FPT", b"2")
    view: dict[str, bytes] = {}
    loads: list[dict[str, bytes]] = []

    def change(key: str, value: bytes | None) -> None:
        if value is None:
            view.pop(key, None)
        else:
            view[key] = value

    def load(entries: dict[str, bytes]) -> None:
        loads.append(dict(entries))
        view.clear()
        view.update(entries)

    watch = bus.BucketWatch(js, Bucket.PRICES, change, on_load=load)
    watch.start()
    await asyncio.wait_for(watch.loaded.wait(), 10)
    assert loads == [{"ACB": b"1", "FPT": b"2"}]
    await kv.put("ACB", b"3")
    await kv.delete("FPT")
    await wait_until(lambda: view == {"ACB": b"3"})
    await watch.stop()

    plain: dict[str, bytes | None] = {}  # without on_load, the current entries come one by one, deletions too
    watch = bus.BucketWatch(js, Bucket.PRICES, lambda key, value: plain.__setitem__(key, value))
    watch.start()
    await asyncio.wait_for(watch.loaded.wait(), 10)
    assert plain == {"ACB": b"3", "FPT": None}
    await watch.stop()


async def test_an_entry_the_receiver_refuses_is_skipped_not_a_frozen_watch(nc: Client) -> None:
    js = nc.jetstream()
    kv = await js.key_value(str(Bucket.REFERENCE))
    baskets: list[list[str]] = []

    def take(key: str, value: bytes | None) -> None:
        if value is not None:
            baskets.append(msgspec.json.decode(value, type=IndexBasket).symbols)

    watch = bus.BucketWatch(js, Bucket.REFERENCE, take)
    watch.start()
    await asyncio.wait_for(watch.loaded.wait(), 10)
    refused = metrics.KV_ENTRIES_REFUSED.labels(str(Bucket.REFERENCE))
    before = refused._value.get()
    await kv.put("basket.VN30", b'{"symbols": null}')
    # the bucket keeps one value a key: the next put must wait, or the bad entry may be gone before it is delivered
    await wait_until(lambda: refused._value.get() == before + 1)
    await kv.put("basket.VN30", msgspec.json.encode(IndexBasket(index_id="VN30", symbols=["ACB"], source="config",
                                                                trading_date=date(2026, 11, 24))))
    await wait_until(lambda: baskets == [["ACB"]])
    assert watch.loads == 1  # the watch itself was never re-created
    await watch.stop()


async def test_every_stream_is_file_backed_and_deduplicating(nc: Client, settings: config.Settings) -> None:
    for spec in (MARKET, DERIVED):
        info = await nc.jetstream().stream_info(spec.name)
        assert info.config.storage == StorageType.FILE
        assert info.config.num_replicas == settings.stream_replicas


@contextlib.asynccontextmanager
async def own_server(path: Path) -> AsyncIterator[tuple[NatsServer, Client]]:
    """A nats-server of the test's own (to stop and kill), with the topology, and a client connected to it."""
    server = NatsServer(path / "store")
    server.start()
    settings = config.load({"NATS_URL": server.url})
    nc = await bus.connect(settings, "restart-test")
    try:
        await bus.ensure_topology(nc.jetstream(), settings)
        yield server, nc
    finally:
        await nc.close()
        server.stop()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_publisher_loses_nothing_and_keeps_order_across_a_nats_restart(tmp_path: Path, how: str) -> None:
    """Publish flat out while the server is stopped (or killed -9) and started again on the same store: every
    message is in the stream exactly once, in publishing order."""
    async with own_server(tmp_path) as (server, nc):
        publisher = bus.Publisher(nc, ack_timeout=1.0)
        await publisher.start()
        total = 20_000

        async def produce() -> None:
            for n in range(total):
                await publisher.publish(MD_TRADE("ACB"), str(n).encode(), msg_id=f"n{n}")

        producing = asyncio.create_task(produce())
        await wait_until(lambda: publisher.pending > 1000)
        await asyncio.to_thread(server.kill if how == "kill" else server.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(producing, 60)
        assert await publisher.stop(timeout=30)

        received: list[int] = []

        async def handle(subject: str, payload: bytes, position: bus.Delivery) -> None:
            received.append(int(payload))

        reader = await bus.consume_from(nc.jetstream(), MARKET, [MD_TRADE.wildcard], handle)
        await wait_until(lambda: len(received) >= total, timeout=30)
        await asyncio.sleep(0.3)
        await reader.stop()
        assert received == list(range(total))


async def test_a_stream_without_a_leader_holds_publishing_back_in_order(tmp_path: Path) -> None:
    """What clients see while a stream's leader moves, on one server: the stream is gone for a second, so every
    publish meanwhile is answered 503 (no responders), then it is back. Nothing published later may be stored before
    what was refused: the stream ends holding every message once, in publishing order."""
    async with own_server(tmp_path) as (_, nc):
        js = nc.jetstream()
        settings = config.load({"NATS_URL": nc.connected_url.geturl()})
        publisher = bus.Publisher(nc, ack_timeout=2.0)
        await publisher.start()
        total = 3_000

        async def produce() -> None:
            for n in range(total):
                await publisher.publish(MD_TRADE("ACB"), str(n).encode(), msg_id=f"m{n}")
                if n == 500:
                    await js.delete_stream(MARKET.name)  # from here on: 503, no stream to answer
                    gone.set()
                await asyncio.sleep(0.001)  # a steady flow (some sent after the stream is back), not one burst

        gone = asyncio.Event()
        producing = asyncio.create_task(produce())
        await asyncio.wait_for(gone.wait(), 30)
        await asyncio.sleep(1.0)
        await bus.ensure_topology(js, settings)  # the stream is back (empty: what was stored before is gone too)
        await asyncio.wait_for(producing, 60)
        assert await publisher.stop(timeout=30)

        received: list[int] = []

        async def handle(subject: str, payload: bytes, position: bus.Delivery) -> None:
            received.append(int(payload))

        reader = await bus.consume_from(js, MARKET, [MD_TRADE.wildcard], handle)
        await wait_until(lambda: bool(received) and received[-1] == total - 1, timeout=30)
        await reader.stop()
        assert received == sorted(received)  # in publishing order: no refused message stored after a newer one
        assert received == list(range(received[0], total))  # and none missing after the stream came back
        assert received[0] <= 501


REFUSED_503 = b'{"error":{"code":503,"err_code":10023,"description":"insufficient resources"}}'


class ScriptedStream:
    """A stand-in for a stream's leader on a real server: a core subscriber that answers the publisher's messages as
    JetStream would, holding the first answer until the second message is in so that both are in flight at once
    (what a leader moving mid-stream looks like), then answering the first `first_answer` (None: no answer at all,
    as when it was lost with its leader) and the rest stored."""

    def __init__(self, nc: Client, subject: str, first_answer: bytes | None) -> None:
        self.nc, self.subject, self.first_answer = nc, subject, first_answer
        self.received: list[bytes] = []
        self._held: list[str] = []

    async def start(self) -> None:
        await self.nc.subscribe(self.subject, cb=self._answer)

    async def _answer(self, msg: Any) -> None:
        self.received.append(msg.data)
        if len(self.received) == 1:
            self._held.append(msg.reply)
            return
        if len(self.received) == 2 and self.first_answer is not None:
            await self.nc.publish(self._held.pop(), self.first_answer)
        await self.nc.publish(msg.reply, f'{{"stream":"S","seq":{len(self.received)}}}'.encode())


async def _publish_two_values_the_first_not_stored(nc: Client, subject: str,
                                            first_answer: bytes | None = REFUSED_503) -> ScriptedStream:
    responder = await nats.connect(nc.connected_url.geturl())
    stream = ScriptedStream(responder, subject, first_answer)
    await stream.start()
    publisher = bus.Publisher(nc, ack_timeout=1.0)
    await publisher.start()
    try:
        await publisher.publish(subject, b"older")
        await publisher.publish(subject, b"newer")
        assert await publisher.stop(timeout=10)  # nothing left unacknowledged, nothing lost
    finally:
        await responder.close()
    return stream


async def test_jetstreams_503_answer_is_a_refusal_sent_again_not_a_loss(nc: Client) -> None:
    errors, reordered = metrics.PUBLISH_ERRORS.labels("10023")._value.get(), PUBLISH_REORDERED._value.get()
    stream = await _publish_two_values_the_first_not_stored(nc, "scripted.ACB")
    assert stream.received == [b"older", b"newer", b"older"]  # the refused one again, after the newer was stored
    assert metrics.PUBLISH_ERRORS.labels("10023")._value.get() == errors  # not given up as an error
    assert PUBLISH_REORDERED._value.get() == reordered + 1  # and the order lost is counted


async def test_a_message_never_answered_and_stored_after_a_newer_one_is_counted(nc: Client) -> None:
    """Lost with its leader (no answer at all), sent again once overdue, it is stored after the newer one: the order
    lost is counted, as when it was refused."""
    reordered = PUBLISH_REORDERED._value.get()
    stream = await _publish_two_values_the_first_not_stored(nc, "scripted.FPT", first_answer=None)
    assert stream.received == [b"older", b"newer", b"older"]
    assert PUBLISH_REORDERED._value.get() == reordered + 1


async def test_a_kv_value_refused_is_not_sent_again_over_a_newer_one(nc: Client) -> None:
    """Sent again, the older value of a key would be stored after the newer one and stay the key's value."""
    superseded, reordered = PUBLISH_SUPERSEDED._value.get(), PUBLISH_REORDERED._value.get()
    stream = await _publish_two_values_the_first_not_stored(nc, "$KV.scripted.ACB")
    assert stream.received == [b"older", b"newer"]
    assert PUBLISH_SUPERSEDED._value.get() == superseded + 1
    assert PUBLISH_REORDERED._value.get() == reordered  # a key's values stayed in order


async def fill(nc: Client, total: int) -> None:
    publisher = bus.Publisher(nc)
    await publisher.start()
    for n in range(total):
        await publisher.publish(MD_TRADE("ACB") if n % 3 else MD_QUOTE("ACB"), str(n).encode(), msg_id=f"r{n}")
        if n % 7 == 0:
            await publisher.publish("md.bar.ACB", b"-1", msg_id=f"b{n}")  # under md.*.*, not wanted
    assert await publisher.stop(timeout=30)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_reader_reads_each_message_once_in_order_across_a_nats_restart(tmp_path: Path, how: str) -> None:
    async with own_server(tmp_path) as (server, nc):
        total = 30_000
        await fill(nc, total)
        received: list[int] = []

        async def handle(subject: str, payload: bytes, position: bus.Delivery) -> None:
            received.append(int(payload))
            if len(received) % 100 == 0:
                await asyncio.sleep(0.001)  # slower than the server: flow control and a queue in play

        reader = await bus.consume_from(nc.jetstream(), MARKET, [MD_TRADE.wildcard, MD_QUOTE.wildcard], handle)
        await wait_until(lambda: len(received) > 3_000)
        await asyncio.to_thread(server.kill if how == "kill" else server.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.start)
        await wait_until(lambda: len(received) >= total and reader.backlog == 0, timeout=60)
        await asyncio.sleep(0.3)
        await reader.stop()
        assert received == list(range(total))
        assert reader.recreated >= 1


async def test_reader_recreates_a_consumer_deleted_under_it(nc: Client) -> None:
    """Its heartbeats stop: the reader re-creates the consumer where it left off, and what comes next arrives."""
    await fill(nc, 1_000)
    received: list[int] = []

    async def handle(subject: str, payload: bytes, position: bus.Delivery) -> None:
        received.append(int(payload))

    js = nc.jetstream()
    reader = bus.StreamReader(js, MARKET, [MD_TRADE.wildcard, MD_QUOTE.wildcard], handle, heartbeat_s=0.25)
    await reader.start()
    await wait_until(lambda: len(received) == 1_000)
    for consumer in await js.consumers_info(MARKET.name):
        await js.delete_consumer(MARKET.name, consumer.name)
    publisher = bus.Publisher(nc)
    await publisher.start()
    for n in range(1_000, 1_500):
        await publisher.publish(MD_TRADE("ACB"), str(n).encode(), msg_id=f"r{n}")
    assert await publisher.stop(timeout=10)
    await wait_until(lambda: len(received) >= 1_500 and reader.backlog == 0, timeout=30)
    await reader.stop()
    assert received == list(range(1_500))
    assert reader.recreated == 1


def test_covering_filter_and_subject_matching() -> None:
    assert bus.covering_filter([MD_TRADE.wildcard, MD_QUOTE.wildcard]) == "md.*.*"
    assert bus.covering_filter(["md.futures.trade.*", "md.futures.quote.*", "md.index.VN30"]) == "md.*.>"
    assert bus.covering_filter(["md.trade.*"]) == "md.trade.*"
    assert bus.covering_filter(["a.b", "a.b.c"]) == "a.>"
    assert bus.covering_filter(["md.>", "md.trade.*"]) == "md.>"
    wanted = bus.subject_matcher(["md.trade.*", "md.index.VN30", "x.>"])
    subjects = ["md.trade.FPT", "md.trade", "md.trade.FPT.x", "md.index.VN30", "md.index.VN100", "x.y", "x", "x.y.z"]
    assert [bool(wanted(s.encode())) for s in subjects] == [True, False, False, True, False, True, False, True]
