"""`stocktracker up` brings up NATS and PostgreSQL of its own and stops everything on Ctrl-C, leaving no process
behind; a second run reuses the first one's data and ports. `stocktracker config` shows every setting."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import nats
import psutil
import pytest

from shared import config

pytestmark = pytest.mark.integration


def start_up(state_dir: Path) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("NATS_URL", "DATABASE_URL")}
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up", "--state-dir", str(state_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def read_until_ready(process: subprocess.Popen[str], timeout: float = 90.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("Ctrl-C stops everything"):
            return lines
    process.kill()
    raise AssertionError(f"up did not get ready: {lines} {process.stderr.read() if process.stderr else ''}")


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


async def test_up_runs_its_own_servers_and_stops_without_orphans(tmp_path: Path) -> None:
    process = start_up(tmp_path)
    lines = read_until_ready(process)
    nats_url = re.search(r"NATS\s+(nats://\S+)", "\n".join(lines)).group(1)  # type: ignore[union-attr]
    database_url = re.search(r"PostgreSQL\s+(postgresql://\S+)", "\n".join(lines)).group(1)  # type: ignore[union-attr]
    servers = [p.pid for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert servers, "no server process runs with the state dir"

    nc = await nats.connect(nats_url)
    assert nc._server_info.get("jetstream")
    await nc.close()
    conn = await asyncpg.connect(database_url)
    await conn.execute("CREATE TABLE marker (n int)")
    await conn.close()
    assert any("not built yet" in line or "running" in line for line in lines)

    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped NATS" in out
    assert "stopped PostgreSQL" in out
    await asyncio.sleep(0.5)
    alive = [pid for pid in servers if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert alive == []

    second = start_up(tmp_path)
    again = read_until_ready(second)
    assert nats_url in "\n".join(again)
    assert database_url in "\n".join(again)
    conn = await asyncpg.connect(database_url)
    assert await conn.fetchval("SELECT count(*) FROM marker") == 0  # the table survived
    await conn.close()
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=60)
    assert second.returncode == 0


def test_config_prints_every_setting() -> None:
    result = subprocess.run([sys.executable, "-m", "shared.cli", "config"], capture_output=True, text=True,
                            env={**os.environ, "METRICS_PORT": "9999"}, check=True)
    names = [line.split("=", 1)[0] for line in result.stdout.splitlines()]
    assert names == list(config.documented_settings())
    assert "METRICS_PORT=9999" in result.stdout


def test_config_rejects_a_bad_value_in_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "shared.cli", "config"], capture_output=True, text=True,
                            env={**os.environ, "LOG_LEVEL": "chatty"})
    assert result.returncode == 2
    assert result.stderr.strip() == "stocktracker config: invalid LOG_LEVEL='chatty': Invalid enum value 'chatty'"
