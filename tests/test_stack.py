"""`stocktracker up` end to end: its own NATS and PostgreSQL, every service as a process, the recorded day replayed;
one service killed at random mid-run is restarted by the supervisor, and the REST snapshot and history still end
exact. Ctrl-C stops every process; a second run continues on the same data and addresses. The tools (`status`,
`tap`, `replay`) work against it. A configuration error is never restarted: `up` refuses it before it starts
anything, or stops everything when a service exits with it; a service that keeps crashing is said to."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fake_ssi import FakeSsi
from helpers import REPLAY_DAY, eventually, expected_day, running
from stack import exact, get, history_complete

from launcher.local import free_port
from launcher.stack import CRASH_LOOP_EXITS, last_error, last_fatal_line
from shared.market import DEFAULT_VN30_BASKET
from shared.runtime import EXIT_CONFIG

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


async def test_up_replays_the_day_survives_a_kill_and_stops_without_orphans(tmp_path: Path, launch: Any) -> None:
    port = free_port()
    first = launch(tmp_path, port, "--source", "replay", "--replay-file", str(REPLAY_DAY), "--speed", "1500",
               basket=expected_day()["vn30_basket"])
    await first.read_until("Ready:")
    everything = set(first.tree())
    victim = random.choice(sorted(first.service_pids()))
    os.kill(first.pid_of(victim), signal.SIGKILL)
    await first.read_until(f"{victim} restarted", timeout=30)
    everything |= set(first.tree())

    await eventually(lambda: exact(first.url), timeout=120, interval=0.5)
    await eventually(lambda: history_complete(first.url), timeout=60, interval=0.5)
    status, candles, _ = await get(f"{first.url}/api/history/BID/candles")
    assert status == 200
    assert [c["volume"] for c in candles] == [c["volume"] for c in expected_day()["candles"]["BID"]]

    tools = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "launcher.cli", "status", "--state-dir",
                                                     str(tmp_path)], env=first.env, cwd=REPO, capture_output=True,
                                    text=True, timeout=30)
    assert tools.returncode == 0, tools.stderr
    for name in ("ingest", "classifier", "foreign", "index", "derivatives", "board", "recorder", "gateway"):
        assert f"  {name} " in tools.stdout
    again = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "launcher.cli", "replay", str(REPLAY_DAY),
                                                     "--state-dir", str(tmp_path)], env=first.env, cwd=REPO,
                                    capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "replayed 1,173 frames" in again.stderr
    assert await exact(first.url)  # the same day again changed nothing

    assert await first.stop() == 0
    assert f"{victim} exited with code -9" in first.output()
    stopping = [line.split()[1] for line in first.lines if line.startswith("stopped ")]
    assert stopping == ["ingest", "classifier", "foreign", "index", "derivatives", "board", "alerts", "recorder",
                        "gateway", "PostgreSQL", "NATS"]
    await asyncio.sleep(0.5)
    assert running(everything) == []

    nats_line = next(line for line in first.lines if line.strip().startswith("NATS"))
    second = launch(tmp_path, port, "--source", "replay", "--replay-file", str(REPLAY_DAY), "--speed", "0",
                basket=expected_day()["vn30_basket"])
    await second.read_until("Ready:")
    assert nats_line in second.lines  # same server address, same store
    assert await exact(second.url)  # the state survived, and replaying the day again counted nothing twice
    await eventually(lambda: history_complete(second.url), timeout=30, interval=0.5)
    assert await second.stop() == 0


async def test_the_default_run_shows_a_whole_market_within_30_seconds(tmp_path: Path, launch: Any) -> None:
    """What `make run` does: the simulator at its default pace; within 30 s of the command, every VN30 symbol has
    stats and a price, and the indices, the foreign summary and the futures basis are there."""
    started = time.monotonic()
    up = launch(tmp_path, free_port())

    async def whole_market() -> bool:
        try:
            status, body, _ = await get(f"{up.url}/api/market/snapshot")
        except OSError:
            return False
        basket = set(DEFAULT_VN30_BASKET)
        return (status == 200 and basket <= set(body["quotes"]) and basket <= set(body["prices"])
                and {"VN30", "VNINDEX"} <= set(body["indices"]) and body["foreign"] is not None
                and body["derivatives"] is not None and body["derivatives"]["basis"] is not None)

    await up.read_until("Ready:")
    await eventually(whole_market, timeout=max(1.0, 30 - (time.monotonic() - started)), interval=0.5)
    everything = up.tree()
    assert await up.stop() == 0
    await asyncio.sleep(0.5)
    assert running(everything) == []


async def test_a_second_up_on_a_running_state_dir_refuses(tmp_path: Path, launch: Any) -> None:
    first = launch(tmp_path, free_port(), "--source", "sim")
    await first.read_until("Ready:")
    second = launch(tmp_path, free_port(), "--source", "sim")
    rest, _ = await asyncio.to_thread(second.process.communicate, timeout=30)
    assert second.process.returncode == 1
    assert "already running" in rest
    assert await first.stop() == 0


async def test_up_killed_outright_leaves_no_orphans(tmp_path: Path, launch: Any) -> None:
    up = launch(tmp_path, free_port(), "--source", "sim")
    await up.read_until("Ready:")
    children = up.tree()
    assert len(children) >= 9  # NATS, PostgreSQL (and its workers), seven services
    up.process.kill()
    up.process.wait()

    # Each child is told to stop (SIGTERM) as its parent dies; NATS goes with them, so a service's shutdown waits out
    # its bounded steps (runtime.SHUTDOWN_STEP_S each, about a minute at most) for acknowledgements that cannot come.
    await eventually(lambda: running(children) == [], timeout=90)


# --- what the supervisor does not restart, and what it says of a crash loop ---------------------------------------


async def test_up_without_ssi_credentials_refuses_at_once_in_one_line(tmp_path: Path, launch: Any) -> None:
    """Checked before anything starts: no NATS, no PostgreSQL, no service; the one line, the configuration exit."""
    started = time.monotonic()
    up = launch(tmp_path, free_port(), "--source", "ssi", env={"SSI_CONSUMER_ID": "", "SSI_CONSUMER_SECRET": ""})
    assert await up.finish(timeout=30) == EXIT_CONFIG
    assert time.monotonic() - started < 10
    assert up.lines == [
        "stocktracker ingest: invalid SSI_CONSUMER_ID/SSI_CONSUMER_SECRET: INGEST_SOURCE=ssi needs both"]
    assert not (tmp_path / "nats").exists()
    assert not (tmp_path / "postgres").exists()
    assert up.servers_left() == []


async def test_a_service_refused_at_its_start_is_not_restarted_and_stops_everything(tmp_path: Path,
                                                                                     launch: Any) -> None:
    """Credentials SSI rejects are known only once ingest asks for a token: it exits with the configuration code,
    and `up` stops every service in order, then the servers, and exits with that service's one line."""
    async with FakeSsi() as fake:
        up = launch(tmp_path, free_port(), "--source", "ssi",
                    env={"SSI_URL": fake.url, "SSI_STREAM_URL": fake.url, "SSI_CONSUMER_ID": "wrong",
                         "SSI_CONSUMER_SECRET": "nope", "NATS_CONNECT_TIMEOUT_S": "10"})
        await up.read_until("  gateway ")
        everything = set(up.tree())
        code = await up.finish(timeout=60)
    assert code == EXIT_CONFIG, up.output()
    assert up.lines[-1] == ("stocktracker ingest: cannot start: SSI rejected the credentials "
                            "(SSI_CONSUMER_ID/SECRET): The connection is invalid")
    assert any(line.startswith(f"ingest exited with code {EXIT_CONFIG}: its configuration is refused")
               for line in up.lines)
    assert not any(" restarted " in line or "restarting" in line for line in up.lines)
    stopping = [line.split()[1] for line in up.lines if line.startswith("stopped ")]
    assert stopping == ["ingest", "classifier", "foreign", "index", "derivatives", "board", "alerts", "recorder",
                        "gateway", "PostgreSQL", "NATS"]
    await asyncio.sleep(0.5)
    assert running(everything | set(up.service_pids().values())) == []
    assert up.servers_left() == []


async def test_a_service_killed_three_times_is_said_to_crash_loop_and_still_restarted(tmp_path: Path,
                                                                                       launch: Any) -> None:
    up = launch(tmp_path, free_port(), "--source", "sim")
    await up.read_until("Ready:")
    for kill in range(1, CRASH_LOOP_EXITS + 1):
        os.kill(up.pid_of("index"), signal.SIGKILL)
        if kill == CRASH_LOOP_EXITS:
            line = await up.read_until("crash loop", timeout=30)
            assert line.startswith(f"WARNING: index is in a crash loop: {CRASH_LOOP_EXITS} exits within 5 min; "
                                   "still restarting with backoff. Last error: ")
        await up.read_until("index restarted", timeout=30)
    assert sum("crash loop" in line for line in up.lines) == 1  # not before the third exit
    assert up.pid_of("index")
    assert await up.stop() == 0


async def test_a_crash_loop_is_said_with_the_last_error(tmp_path: Path, launch: Any) -> None:
    """The gateway's port is taken: it fails at every start (which a restart may mend: the port may be freed)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        up = launch(tmp_path, taken.getsockname()[1], "--source", "sim")
        line = await up.read_until("crash loop", timeout=90)
        assert "Last error: stocktracker gateway: cannot start: " in line
        assert "address already in use" in line
        assert up.process.poll() is None  # still supervising
        assert await up.stop() == 0


def test_the_last_error_of_a_log() -> None:
    failed = ('{"event": "failed", "reason": "handler failed on md.trade.ACB: KeyError(\'x\')", "level": "error", '
              '"logger": "classifier", "timestamp": "2026-01-05T02:00:00Z", "service": "classifier"}')
    crashed = ('{"event": "source failed", "level": "error", "exception": "Traceback (most recent call last):\\n'
               '  File \\"x.py\\", line 1\\nOSError: disk full", "service": "ingest"}')
    assert last_error(['{"event": "started", "level": "info"}', failed, "plain text"], "classifier") == (
        "failed reason=handler failed on md.trade.ACB: KeyError('x')")
    assert last_error([crashed, '{"event": "stopping", "level": "info"}'], "ingest") == (
        "source failed OSError: disk full")
    assert last_error([failed, "stocktracker classifier: handler failed"], "classifier") == (
        "stocktracker classifier: handler failed")
    assert last_error(['{"event": "started", "level": "info"}', "{not json"], "index") is None
    traceback = ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "    import y",
                 "ImportError: cannot import name 'y'"]
    assert last_error([failed, *traceback, ""], "gateway") == "ImportError: cannot import name 'y'"
    assert last_fatal_line(["stocktracker index: old", "stocktracker gateway: other", "x"], "index") == (
        "stocktracker index: old")
