"""`stocktracker up` driven from the tests: its output read line by line, its processes found, the system's REST
answers compared with the recorded day's expected figures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from helpers import expected_day, running

REPO = Path(__file__).resolve().parent.parent


async def get(url: str, **kwargs: Any) -> tuple[int, Any, Any]:
    import json

    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as response:
        body = await response.read()
        return response.status, json.loads(body) if body else None, response


class Up:
    def __init__(self, state_dir: Path, port: int, *args: str, basket: list[str] | None = None,
                 servers: dict[str, str] | None = None, env: dict[str, str] | None = None) -> None:
        """`servers`: NATS_URL / DATABASE_URL of servers the test runs itself; by default `up` starts its own.
        `env`: other variables for `up` and its services (an empty value unsets one)."""
        env = {**{key: value for key, value in os.environ.items()
                  if key not in ("NATS_URL", "DATABASE_URL", "VN30_SYMBOLS", "INGEST_SOURCE", "SIM_SPEED")},
               "GATEWAY_PORT": str(port), "CHECKPOINT_INTERVAL_S": "0.2", **(servers or {}), **(env or {})}
        if basket:
            env["VN30_SYMBOLS"] = ",".join(basket)
        self.env = env
        self.state_dir = state_dir
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "launcher.cli", "up", "--state-dir", str(state_dir), *args],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []

    async def read_until(self, marker: str, timeout: float = 120.0) -> str:
        def read() -> str:
            assert self.process.stdout is not None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = self.process.stdout.readline()
                if not line:
                    raise AssertionError(f"up ended before {marker!r}: {self.lines}")
                self.lines.append(line.rstrip())
                if marker in line:
                    return line
            raise AssertionError(f"no {marker!r} within {timeout} s: {self.lines}")

        return await asyncio.to_thread(read)

    def output(self) -> str:
        return "\n".join(self.lines)

    def service_warnings(self, per_service: int = 12) -> str:
        """Each service's last warnings and errors, from its log in the state dir: what a failed drill reports."""
        report = []
        for log in sorted((self.state_dir / "logs").glob("*.log")):
            lines = [line for line in log.read_text(errors="replace").splitlines()
                     if '"level":"info"' not in line and '"level":"debug"' not in line]
            report += [f"{log.stem}: {line[:600]}" for line in lines[-per_service:]]
        return "\n".join(report)

    def service_pids(self) -> dict[str, int]:
        return {match[1]: int(match[2]) for match in re.finditer(r"^  (\w+)\s+pid (\d+)", self.output(), re.M)} | {
            match[1]: int(match[2]) for match in re.finditer(r"^(\w+) restarted \(pid (\d+)", self.output(), re.M)}

    def pid_of(self, service: str) -> int:
        """The service's current process (it may have been restarted since the output was read)."""
        for child in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.Error):
                if f"services.{service}" in child.cmdline():
                    return child.pid
        raise AssertionError(f"{service} is not running")

    def tree(self) -> list[int]:
        return [child.pid for child in psutil.Process(self.process.pid).children(recursive=True)]

    def servers_left(self) -> list[int]:
        """Processes still running from the state dir: the NATS and PostgreSQL `up` started name it."""
        left = []
        for process in psutil.process_iter(["cmdline"]):
            if any(str(self.state_dir.resolve()) in part for part in process.info["cmdline"] or ()):
                left.append(process.pid)
        return running(left)

    async def finish(self, timeout: float = 90.0) -> int:
        """Wait for `up` to end by itself; its exit code (the rest of its output is read)."""
        rest, _ = await asyncio.to_thread(self.process.communicate, timeout=timeout)
        self.lines += rest.splitlines()
        return self.process.returncode

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return await self.finish()


def snapshot_differences(body: dict[str, Any]) -> list[str]:
    """What in a snapshot differs from the recorded day's expected figures (empty when it is exact)."""
    expected = expected_day()
    differences = []
    try:
        for symbol, figures in expected["quotes"].items():
            for field, value in figures.items():
                if field != "symbol" and abs(body["quotes"][symbol][field] - value) > 0.5:
                    differences.append(f"{symbol}.{field} {body['quotes'][symbol][field]} != {value}")
        foreign = body["foreign"]
        for name, got, want, tolerance in (
            ("derivatives.symbol", body["derivatives"]["symbol"], expected["derivatives"]["symbol"], None),
            ("derivatives.basis", body["derivatives"]["basis"], expected["derivatives"]["basis"], 1e-6),
            ("foreign.top_buy", foreign and [d["symbol"] for d in foreign["top_buy"]],
             expected["foreign"]["summary"]["top_buy"], None),
            ("VN30", body["indices"]["VN30"]["value"], expected["indices"]["VN30"]["value"], 1e-6),
        ):
            if (got != want) if tolerance is None else abs(got - want) >= tolerance:
                differences.append(f"{name} {got} != {want}")
    except (KeyError, TypeError) as missing:
        differences.append(f"missing {missing!r}")
    return differences


async def snapshot_differences_at(url: str) -> list[str]:
    try:
        status, body, _ = await get(f"{url}/api/market/snapshot")
    except OSError as error:
        return [f"no answer: {error!r}"]
    return snapshot_differences(body) if status == 200 else [f"status {status}"]


async def exact(url: str) -> bool:
    return not await snapshot_differences_at(url)


async def history_complete(url: str) -> bool:
    expected = expected_day()
    try:
        status, ticks, _ = await get(f"{url}/api/history/ACB/ticks")
        _, futures, _ = await get(f"{url}/api/history/VN30F2612/ticks")
        _, basis, _ = await get(f"{url}/api/history/derivatives/VN30F2612")
    except OSError:
        return False
    return (status == 200 and len(ticks) == expected["ticks"]["ACB"]
            and len(futures) == expected["ticks"]["VN30F2612"] and len(basis) == len(expected["basis_points"]))


