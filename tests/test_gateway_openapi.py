"""schemathesis against the gateway's own OpenAPI document, the gateway running as its own process over KV filled
by the real trackers and history recorded by the real recorder: no 5xx, no response outside the documented
schemas, statuses or content types."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest
from helpers import eventually, expected_day
from test_gateway import fill
from test_recorder import record_all

from launcher.local import free_port
from shared import config

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


async def test_schemathesis_finds_nothing(nats_url: str, database_url: str, tmp_path: Path) -> None:
    settings = config.load({"NATS_URL": nats_url, "DATABASE_URL": database_url, "METRICS_PORT": "0",
                            "VN30_SYMBOLS": ",".join(expected_day()["vn30_basket"])})
    await fill(settings)
    await record_all(settings)  # history to query, too
    port = free_port()
    env = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url, "METRICS_PORT": "0",
           "GATEWAY_PORT": str(port)}
    gateway = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.gateway", env=env, cwd=REPO,
                                                   stdout=asyncio.subprocess.DEVNULL)
    try:
        import aiohttp

        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as reply:
                    return reply.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=30)
        command = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        assert command, "schemathesis is a test dependency"
        run = await asyncio.create_subprocess_exec(
            # Every check but positive_data_acceptance: a schema cannot say that `end` must follow `start` or that a
            # period has a maximum, so those well-formed but refused requests are 400s by design, not defects.
            command, "run", f"http://127.0.0.1:{port}/api/openapi.json", "--checks", "all",
            "--exclude-checks", "positive_data_acceptance", "--max-examples", "100",
            "--seed", "20261124", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"}, cwd=tmp_path,  # its .schemathesis cache stays out of the repository
        )
        output = (await asyncio.wait_for(run.communicate(), 300))[0].decode()
    finally:
        gateway.terminate()
        await gateway.wait()
    assert run.returncode == 0, output
    assert "No issues found" in output
