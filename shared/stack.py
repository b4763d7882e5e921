"""The whole system on one machine: NATS and PostgreSQL of its own (unless NATS_URL / DATABASE_URL point elsewhere),
then every service as its own process, supervised: a service that exits is restarted with backoff, and Ctrl-C stops
them in catalog order (ingest first, so nothing new enters while the rest finish; gateway last), then the servers.

What it chose (ports) is remembered in the state dir, so the next run continues on the same data and addresses.
Every child is asked by the kernel to stop should this process die without cleaning up: no orphans either way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import msgspec

from shared import config
from shared.catalog import SERVICES, ServiceSpec
from shared.local import (
    LocalServerError,
    NatsServer,
    PostgresServer,
    die_with_parent,
    free_port,
    nats_server_binary,
    nats_server_version,
    port_is_free,
)

RESTART_BACKOFF_S = (1, 2, 5, 10, 30)


class UpState(msgspec.Struct):
    """What `up` remembers in its state dir, so the next run reuses the same ports and data."""

    nats_port: int = 0
    postgres_port: int = 0
    metrics_ports: dict[str, int] = msgspec.field(default_factory=dict)
    pid: int = 0


@dataclass
class ServiceProcess:
    spec: ServiceSpec
    env: dict[str, str]
    log_path: Path
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        if self.log_file is None:
            self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.spec.module], env=self.env, stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
        )

    def stop(self, timeout: float = 20.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


@dataclass
class UpOptions:
    state_dir: Path
    source: str | None = None  # sim / replay / ssi; None: INGEST_SOURCE
    replay_file: Path | None = None
    speed: float | None = None


def _say(message: str = "") -> None:
    print(message, flush=True)


def _load_state(path: Path) -> UpState:
    try:
        return msgspec.json.decode(path.read_bytes(), type=UpState)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return UpState()


def _port(remembered: int, preferred: int = 0) -> int:
    """The port used last time if it is free, else the preferred one if free, else any free one."""
    for candidate in (remembered, preferred):
        if candidate and port_is_free(candidate):
            return candidate
    return free_port()


def _ingest_env(options: UpOptions) -> dict[str, str]:
    env: dict[str, str] = {}
    if options.source:
        env["INGEST_SOURCE"] = options.source
    if options.replay_file:
        env["INGEST_SOURCE"] = env.get("INGEST_SOURCE", "replay")
        env["REPLAY_FILE"] = str(options.replay_file.resolve())
    if options.speed is not None:
        env["REPLAY_SPEED"] = env["SIM_SPEED"] = str(options.speed)
    return env


class Stack:
    def __init__(self, settings: config.Settings, options: UpOptions) -> None:
        self.settings = settings
        self.options = options
        self.state_dir = options.state_dir.resolve()
        self.state_path = self.state_dir / "up.json"
        self.state = _load_state(self.state_path)
        self.nats: NatsServer | None = None
        self.postgres: PostgresServer | None = None
        self.services: list[ServiceProcess] = []
        self.stop_requested = threading.Event()
        self.gateway_url = ""

    def run(self) -> int:
        if self.state.pid and self.state.pid != os.getpid() and _alive(self.state.pid):
            print(f"stocktracker up: already running in {self.state_dir} (pid {self.state.pid})", file=sys.stderr)
            return 1
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        try:
            nats_url, database_url = self._start_servers()
            self._start_services(nats_url, database_url)
            self._remember()
            self._announce_when_ready()
            self._supervise()
        except (LocalServerError, subprocess.CalledProcessError) as err:
            print(f"stocktracker up: {err}", file=sys.stderr)
            return 1
        finally:
            self.shutdown()
        return 0

    def _start_servers(self) -> tuple[str, str]:
        _say(f"stock-tracker up (state and logs in {self.state_dir})")
        if os.environ.get("NATS_URL"):
            nats_url = os.environ["NATS_URL"]
            _say(f"  NATS          {nats_url}  (from NATS_URL)")
        else:
            binary = nats_server_binary()
            self.nats = NatsServer(self.state_dir / "nats", port=_port(self.state.nats_port), binary=binary)
            nats_url = self.nats.start()
            self.state.nats_port = self.nats.port
            _say(f"  NATS          {nats_url}  (nats-server {nats_server_version(binary)})")
        if os.environ.get("DATABASE_URL"):
            database_url = os.environ["DATABASE_URL"]
            _say(f"  PostgreSQL    {database_url}  (from DATABASE_URL)")
        else:
            self.postgres = PostgresServer(self.state_dir / "postgres", port=_port(self.state.postgres_port))
            database_url = self.postgres.start()
            self.state.postgres_port = self.postgres.port
            _say(f"  PostgreSQL    {database_url}")
        return nats_url, database_url

    def _start_services(self, nats_url: str, database_url: str) -> None:
        settings = self.settings
        base = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url, **_ingest_env(self.options)}
        gateway_host = "127.0.0.1" if settings.gateway_host in ("0.0.0.0", "") else settings.gateway_host
        self.gateway_url = f"http://{gateway_host}:{settings.gateway_port}"
        source = base.get("INGEST_SOURCE", settings.ingest_source)
        detail = {"sim": f"SIM_SPEED {base.get('SIM_SPEED', settings.sim_speed)}",
                  "replay": f"{base.get('REPLAY_FILE', settings.replay_file)} at "
                            f"REPLAY_SPEED {base.get('REPLAY_SPEED', settings.replay_speed)}",
                  "ssi": settings.ssi_stream_url}.get(source, "")
        _say(f"  Source        {source}  ({detail})")
        _say(f"  Dashboard     {self.gateway_url}/")
        _say(f"  REST          {self.gateway_url}/api/market/snapshot  (OpenAPI {self.gateway_url}/api/openapi.json)")
        _say(f"  WebSocket     ws://{gateway_host}:{settings.gateway_port}/ws/market | foreign | index | derivatives")
        _say("Services:")
        for spec in SERVICES:
            if not spec.is_built():
                _say(f"  {spec.name:<12} not built yet")
                continue
            port = _port(self.state.metrics_ports.get(spec.name, 0), spec.metrics_port)
            self.state.metrics_ports[spec.name] = port
            service = ServiceProcess(spec, {**base, "METRICS_PORT": str(port)},
                                     self.state_dir / "logs" / f"{spec.name}.log", port)
            service.start()
            self.services.append(service)
            assert service.process is not None
            _say(f"  {spec.name:<12} pid {service.process.pid:<7} metrics http://127.0.0.1:{port}/metrics")

    def _remember(self) -> None:
        self.state.pid = os.getpid()
        self.state_path.write_bytes(msgspec.json.encode(self.state))

    def _announce_when_ready(self) -> None:
        def wait() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not self.stop_requested.is_set():
                try:
                    with urllib.request.urlopen(f"{self.gateway_url}/healthz", timeout=1) as reply:
                        if reply.status == 200:
                            _say(f"Ready: {self.gateway_url}/  (Ctrl-C stops everything)")
                            return
                except OSError:
                    pass
                time.sleep(0.5)

        if any(service.spec.name == "gateway" for service in self.services):
            threading.Thread(target=wait, daemon=True).start()
        _say("Ctrl-C stops everything.")

    def _supervise(self) -> None:
        """Restart a service that exits, waiting longer after each crash."""
        while not self.stop_requested.wait(0.5):
            for service in self.services:
                assert service.process is not None
                code = service.process.poll()
                if code is None:
                    continue
                now = time.monotonic()
                if service.next_start == 0.0:
                    delay = RESTART_BACKOFF_S[min(service.restarts, len(RESTART_BACKOFF_S) - 1)]
                    service.next_start = now + delay
                    _say(f"{service.spec.name} exited with code {code}; restarting in {delay} s "
                         f"(log: {service.log_path})")
                elif now >= service.next_start:
                    service.restarts += 1
                    service.next_start = 0.0
                    service.start()
                    assert service.process is not None
                    _say(f"{service.spec.name} restarted (pid {service.process.pid}, restart #{service.restarts})")

    def shutdown(self) -> None:
        for service in self.services:
            service.stop()
            _say(f"stopped {service.spec.name}")
        if self.postgres:
            self.postgres.stop()
            _say("stopped PostgreSQL")
        if self.nats:
            self.nats.stop()
            _say("stopped NATS")
        if self.state.pid == os.getpid():
            self.state.pid = 0
            self.state_path.write_bytes(msgspec.json.encode(self.state))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remembered_nats_url(state_dir: Path) -> str | None:
    """The NATS URL a running `up` started, for the tools (`status`, `tap`) when NATS_URL is unset."""
    state = _load_state(state_dir / "up.json")
    return f"nats://127.0.0.1:{state.nats_port}" if state.nats_port else None
