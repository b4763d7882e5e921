"""The actor shell, run as a real process against a real nats-server: it starts, registers with nats.micro
(answers $SRV.PING), serves /metrics and /healthz, and shuts down cleanly on SIGTERM; bad configuration, an old
nats-server or one without JetStream, credentials refused stop it at once with one clear line and the configuration
exit (no restart mends them); an unreachable NATS with the exit a restart may mend."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import nats
import pytest

from launcher.local import NatsServer, free_port, nats_server_binary, nats_server_version
from shared.bus import BusError, check_server_version
from shared.runtime import EXIT_CANNOT_START, EXIT_CONFIG

ECHO = Path(__file__).resolve().parent / "echo_actor.py"


def launch(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ECHO)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def wait_for_ping(nc: nats.NATS, name: str, timeout: float = 15.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            reply = await nc.request(f"$SRV.PING.{name}", b"", timeout=0.5)
            return json.loads(reply.data)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.fixture
def echo(nats_url: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = launch({"NATS_URL": nats_url, "METRICS_PORT": str(port), "NATS_CONNECT_TIMEOUT_S": "10"})
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.integration
async def test_actor_lifecycle(echo: tuple[subprocess.Popen[str], int], nats_url: str) -> None:
    process, port = echo
    nc = await nats.connect(nats_url)
    try:
        ping = await wait_for_ping(nc, "echo")
        assert ping["type"] == "io.nats.micro.v1.ping_response"
        assert ping["name"] == "echo"

        for n in range(16):
            reply = await nc.request("test.echo", f"hello {n}".encode(), timeout=2)
            assert reply.data == f"hello {n}".encode()

        status = json.loads((await nc.request("stocktracker.echo.status", b"", timeout=2)).data)
        assert status == {"service": "echo", "ready": True, "answered": 16}

        info = json.loads((await nc.request("$SRV.INFO.echo", b"", timeout=2)).data)
        assert info["metadata"]["metrics_port"] == str(port)
        stats = json.loads((await nc.request("$SRV.STATS.echo", b"", timeout=2)).data)
        assert stats["endpoints"][0]["data"] == {"answered": 16}

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                body = await response.text()
                assert 'stocktracker_service_info{name="echo",version="0.1.0"} 1.0' in body
                assert "stocktracker_nats_connected 1.0" in body
                assert 'stocktracker_messages_in_total{family="test.echo"} 16.0' in body
                assert 'stocktracker_handler_seconds_count{family="test.echo"} 1.0' in body  # one in 16 timed
                # the process is the service's own: its collector was settled, with a full collection, once started
                full = re.search(r'^stocktracker_gc_pause_seconds_count\{generation="2"\} (\S+)$', body, re.M)
                assert full is not None
                assert float(full[1]) >= 1
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                assert await response.json() == {"live": True, "ready": True}
    finally:
        await nc.close()

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events if e.get("logger") == "echo"] == ["started", "stopping", "stopped"]
    assert all(e["service"] == "echo" for e in events)


def test_a_service_process_settles_its_garbage_collector() -> None:
    """What a service loaded is frozen out of the collector's sight, young collections run less often, and every
    collection's pause is observed (in a process of its own: a freeze is for the whole process)."""
    script = """
import gc
from shared import metrics
from shared.runtime import GC_YOUNG_THRESHOLD, settle_garbage_collector

def full_collections():
    return next(s.value for s in metrics.GC_PAUSE_SECONDS.collect()[0].samples
                if s.name.endswith("_count") and s.labels["generation"] == "2")

assert gc.get_freeze_count() == 0
settle_garbage_collector()
frozen = gc.get_freeze_count()
settling = full_collections()
gc.collect()
print(frozen, gc.get_threshold()[0] == GC_YOUNG_THRESHOLD, settling, full_collections() - settling)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    frozen, threshold_set, settling, observed = done.stdout.split()
    assert int(frozen) > 10_000  # modules, classes, functions: what a full collection no longer walks
    assert threshold_set == "True"
    assert settling == "1.0"  # the collection of the start-up's garbage, observed like any other
    assert observed == "1.0"


@pytest.mark.integration
async def test_sigint_also_stops_cleanly(echo: tuple[subprocess.Popen[str], int], nats_url: str) -> None:
    process, _ = echo
    nc = await nats.connect(nats_url)
    await wait_for_ping(nc, "echo")
    await nc.close()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=20)
    assert process.returncode == 0


@pytest.mark.integration
async def test_a_failing_handler_stops_the_service_with_a_non_zero_exit(
    echo: tuple[subprocess.Popen[str], int], nats_url: str
) -> None:
    process, _ = echo
    nc = await nats.connect(nats_url)
    await wait_for_ping(nc, "echo")
    await nc.publish("test.echo", b"crash")
    await nc.flush()
    await nc.close()
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 1
    assert stderr.strip() == "stocktracker echo: handler failed on test.echo: RuntimeError('asked to crash')"


@pytest.mark.parametrize(("variable", "value"), [("METRICS_PORT", "not-a-port"), ("NATS_URL", "http://x")])
def test_bad_configuration_stops_with_one_line(variable: str, value: str) -> None:
    process = launch({variable: value})
    _stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == EXIT_CONFIG
    assert stderr.strip().count("\n") == 0
    assert stderr.startswith(f"stocktracker echo: invalid {variable}=")


def test_unreachable_nats_stops_with_one_line() -> None:
    process = launch({"NATS_URL": f"nats://127.0.0.1:{free_port()}", "NATS_CONNECT_TIMEOUT_S": "1",
                      "METRICS_PORT": "0"})
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == EXIT_CANNOT_START
    assert stderr.strip() == stderr.strip().splitlines()[0]
    assert "cannot reach NATS" in stderr


def test_version_check() -> None:
    check_server_version("2.10.0")
    check_server_version("2.15.1")
    check_server_version("v2.11.3-beta")
    for old in ("2.9.25", "2.2.0", "1.4.1"):
        with pytest.raises(BusError, match=r"needs nats-server >= 2\.10\.0"):
            check_server_version(old)


def _old_nats_server() -> Path | None:
    """The machine's own nats-server when it predates the minimum (Debian ships 2.9)."""
    for candidate in ("/usr/sbin/nats-server", shutil.which("nats-server")):
        if candidate and Path(candidate).exists() and nats_server_version(Path(candidate)).startswith(("2.9.", "2.8.")):
            return Path(candidate)
    return None


@pytest.mark.integration
def test_old_nats_server_stops_every_service_with_one_line(tmp_path: Path) -> None:
    binary = _old_nats_server()
    if binary is None:
        pytest.skip("no nats-server older than 2.10 on this machine to test against")
    server = NatsServer(tmp_path / "store", binary=binary)
    server.start()
    try:
        process = launch({"NATS_URL": server.url, "METRICS_PORT": "0"})
        _, stderr = process.communicate(timeout=20)
    finally:
        server.stop()
    assert process.returncode == EXIT_CONFIG
    line = stderr.strip()
    assert "\n" not in line
    assert "is too old: stock-tracker needs nats-server >= 2.10.0" in line


@pytest.mark.integration
def test_nats_server_without_jetstream_is_a_configuration_exit(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen([str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process = launch({"NATS_URL": f"nats://127.0.0.1:{port}", "NATS_CONNECT_TIMEOUT_S": "10", "METRICS_PORT": "0"})
        _, stderr = process.communicate(timeout=20)
    finally:
        server.terminate()
        server.wait()
    assert process.returncode == EXIT_CONFIG
    assert stderr.strip() == (f"stocktracker echo: nats-server at nats://127.0.0.1:{port} runs without JetStream: "
                              "start it with -js")
