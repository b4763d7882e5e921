"""The system on a three-node JetStream cluster, as it runs in the deployment (the same cluster file): `stocktracker
up --cluster 3` on a cluster of its own, and drills through a cluster of the test's own (streams and buckets at
STREAM_REPLICAS=3), each ending with the recorded day's exact snapshot, history and row counts: the node leading the
MARKET stream killed with SIGKILL mid-replay and back later, a rolling restart of all three nodes, a node stopped for
good, and the system scaled out: two classifier partitions and two gateways, one partition killed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import nats
import psutil
import pytest
from helpers import REPLAY_DAY, eventually, expected_day
from stack import Up, exact, get
from test_drills import database_url_of, ends_exact
from test_poison import nats_url_of

from launcher.cli import _gather
from launcher.local import NatsCluster, NatsNode, free_port, port_is_free
from shared import bus, config, metrics
from shared.bus.publisher import PUBLISH_HELD_BACK, PUBLISH_REORDERED
from shared.subjects import MARKET, MD_TRADE, STREAMS, Bucket

pytestmark = pytest.mark.integration


async def replicas(nats_url: str) -> dict[str, int]:
    nc = await nats.connect(nats_url.split(","))
    try:
        return {spec.name: (await nc.jetstream().stream_info(spec.name)).config.num_replicas for spec in STREAMS}
    finally:
        await nc.close()


async def leader_of(cluster: NatsCluster, stream: str) -> NatsNode:
    nc = await nats.connect(cluster.urls)
    try:
        info = await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()
    assert info.cluster is not None
    return next(node for node in cluster.nodes if node.node_name == info.cluster.leader)


async def replaying_on(cluster: NatsCluster, launch: Any, tmp_path: Path, speed: str) -> Up:
    up = launch(tmp_path / "state", free_port(), "--source", "replay", "--replay-file", str(REPLAY_DAY), "--speed",
                speed, basket=expected_day()["vn30_basket"], servers={"NATS_URL": cluster.url},
                env={"STREAM_REPLICAS": "3"})
    await up.read_until("Ready:")
    return up


def _r3(nats_url: str) -> config.Settings:
    return config.load({"NATS_URL": nats_url, "STREAM_REPLICAS": "3"})


async def test_services_starting_together_find_every_stream_led_and_writable(nats_cluster: NatsCluster) -> None:
    """Every service creates the topology at start, all at once on a fresh cluster, one connected to each node: the
    ones that find a stream already created must not publish before its leader is elected (it would be refused)."""
    settings = _r3(nats_cluster.url)
    clients = [await bus.connect(_r3(url), "tests") for url in nats_cluster.urls]
    resends = metrics.PUBLISH_RESENDS._value.get()
    try:
        await asyncio.gather(*(bus.ensure_topology(client.jetstream(), settings) for client in clients))
        for client in clients:
            for name in [spec.name for spec in STREAMS] + [f"KV_{bucket}" for bucket in Bucket]:
                info = await client.jetstream().stream_info(name)
                assert info.cluster is not None
                assert info.cluster.leader, name
                assert info.config.num_replicas == 3
        publishers = [bus.Publisher(client) for client in clients]
        for number, publisher in enumerate(publishers):
            await publisher.start()
            await publisher.publish(f"$KV.{Bucket.REFERENCE}.probe{number}", b"{}")
            await publisher.publish(MD_TRADE("ACB"), str(number).encode(), msg_id=f"first:{number}")
        assert all([await publisher.stop(timeout=10) for publisher in publishers])
        assert metrics.PUBLISH_RESENDS._value.get() == resends  # nothing was refused
    finally:
        for client in clients:
            await client.close()


async def test_a_copy_sent_while_the_first_is_stored_is_a_duplicate(nats_cluster: NatsCluster) -> None:
    """On a cluster a message is proposed to the replicas before it is stored, so a copy sent right behind it (the
    same natural key, as a feed repeats a frame) is answered "in process": a duplicate, neither a refusal that holds
    publishing back nor a message stored out of order."""
    settings = _r3(nats_cluster.url)
    nc = await bus.connect(settings, "tests")
    try:
        await bus.ensure_topology(nc.jetstream(), settings)
        before = (PUBLISH_HELD_BACK._value.get(), PUBLISH_REORDERED._value.get(),
                  metrics.PUBLISH_DUPLICATES._value.get())
        publisher = bus.Publisher(nc)
        await publisher.start()
        total = 500
        for n in range(total):
            for _ in range(2):
                await publisher.publish(MD_TRADE("ACB"), str(n).encode(), msg_id=f"twice:{n}")
        assert await publisher.stop(timeout=30)
        info = await nc.jetstream().stream_info(MARKET.name)
        assert info.state.messages == total
        held_back, reordered, duplicates = (PUBLISH_HELD_BACK._value.get(), PUBLISH_REORDERED._value.get(),
                                            metrics.PUBLISH_DUPLICATES._value.get())
        assert (held_back, reordered) == before[:2]
        assert duplicates - before[2] == total  # every copy answered as the duplicate it is
    finally:
        await nc.close()


async def test_up_runs_on_a_cluster_of_its_own(tmp_path: Path, launch: Any) -> None:
    up = launch(tmp_path / "state", free_port(), "--cluster", "3", "--source", "replay", "--replay-file",
                str(REPLAY_DAY), "--speed", "0", basket=expected_day()["vn30_basket"])
    try:
        await up.read_until("Ready:")
        urls = nats_url_of(up).split(",")
        assert len(urls) == 3
        assert any("3-node cluster" in line for line in up.lines)
        assert await replicas(nats_url_of(up)) == {spec.name: 3 for spec in STREAMS}
        await ends_exact(up, database_url_of(up))
    finally:
        assert await up.stop() == 0


async def test_the_market_streams_leader_killed_mid_replay(nats_cluster: NatsCluster, tmp_path: Path,
                                                          launch: Any) -> None:
    up = await replaying_on(nats_cluster, launch, tmp_path, "800")  # the day takes about 27 s
    try:
        await asyncio.sleep(4)
        leader = await leader_of(nats_cluster, MARKET.name)
        await asyncio.to_thread(leader.kill)
        await asyncio.sleep(6)  # a new leader takes over; the day goes on
        await asyncio.to_thread(leader.start)  # back later, on the same store
        await ends_exact(up, database_url_of(up))
        assert not [line for line in up.lines if " exited with code " in line]  # all rode it out
    finally:
        assert await up.stop() == 0


async def test_a_rolling_restart_of_every_node(nats_cluster: NatsCluster, tmp_path: Path, launch: Any) -> None:
    up = await replaying_on(nats_cluster, launch, tmp_path, "600")
    try:
        for node in nats_cluster.nodes:
            await asyncio.sleep(2)
            await asyncio.to_thread(node.stop)
            await asyncio.sleep(2)
            await asyncio.to_thread(node.start)
        await ends_exact(up, database_url_of(up))
        assert not [line for line in up.lines if " exited with code " in line]
    finally:
        assert await up.stop() == 0


async def test_a_node_stopped_for_good(nats_cluster: NatsCluster, tmp_path: Path, launch: Any) -> None:
    up = await replaying_on(nats_cluster, launch, tmp_path, "800")
    try:
        await asyncio.sleep(3)
        await asyncio.to_thread(nats_cluster.nodes[1].stop)  # the other two keep a quorum
        await ends_exact(up, database_url_of(up))
        assert not [line for line in up.lines if " exited with code " in line]
    finally:
        assert await up.stop() == 0


def _instance(up: Up, partition: str) -> int:
    """The pid of the classifier instance running PARTITION `partition`."""
    for child in psutil.Process(up.process.pid).children():
        with contextlib.suppress(psutil.Error):
            if "services.classifier" in child.cmdline() and child.environ().get("PARTITION") == partition:
                return child.pid
    raise AssertionError(f"no classifier {partition} running")


async def test_two_classifier_partitions_and_two_gateways(tmp_path: Path, launch: Any) -> None:
    """Scaled out on the cluster: both gateways serve the recorded day's exact snapshot, the two classifier
    partitions together classifying every symbol once; one partition killed, restarted, and still exact."""
    port = free_port()
    while not port_is_free(port + 1):
        port = free_port()
    up = launch(tmp_path / "state", port, "--cluster", "3", "--scale", "classifier=2", "--scale", "gateway=2",
                "--source", "replay", "--replay-file", str(REPLAY_DAY), "--speed", "800",
                basket=expected_day()["vn30_basket"])
    second = f"http://127.0.0.1:{port + 1}"
    try:
        await up.read_until("Ready:")
        assert any(line.startswith("  Gateways") for line in up.lines)
        await asyncio.sleep(3)
        os.kill(_instance(up, "1/2"), signal.SIGKILL)
        await up.read_until("classifier-2 restarted", timeout=30)
        await ends_exact(up, database_url_of(up))
        await eventually(lambda: exact(second), timeout=60, interval=0.5)
        _, first_view, _ = await get(f"{up.url}/api/market/snapshot")
        _, second_view, _ = await get(f"{second}/api/market/snapshot")
        assert first_view["quotes"] == second_view["quotes"]  # the same buckets, the same view
        assert first_view["prices"] == second_view["prices"]
        nc = await nats.connect(nats_url_of(up).split(","))
        try:
            shares = [answer["endpoints"][0]["data"]["symbols"] if answer.get("endpoints") else 0
                      for answer in await _gather(nc, "$SRV.STATS.classifier", 1.0)]
        finally:
            await nc.close()
        assert len(shares) == 2
        assert all(shares)  # each partition has symbols of its own ...
        assert sum(shares) == len(expected_day()["quotes"])  # ... and together every symbol, once
        exits = [line for line in up.lines if " exited with code " in line]
        assert exits == [next(line for line in exits if line.startswith("classifier-2"))]  # only the one killed
    finally:
        assert await up.stop() == 0
