"""The whole system on one machine: NATS and PostgreSQL of its own (unless NATS_URL / DATABASE_URL point elsewhere),
then every service as its own process, supervised: a service that exits is restarted with backoff (and one that keeps
exiting is said to be in a crash loop), and Ctrl-C stops them in catalog order (ingest first, so nothing new enters
while the rest finish; gateway last), then the servers. A configuration error is not restarted: `up` checks every
service's configuration before it starts anything, and a service that exits with EXIT_CONFIG stops everything.

What it chose (ports) is remembered in the state dir, so the next run continues on the same data and addresses.
Every child is asked by the kernel to stop should this process die without cleaning up: no orphans either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from launcher.catalog import SERVICES, ServiceSpec
from launcher.local import (
    CLUSTER_NODES,
    LocalServerError,
    NatsCluster,
    NatsServer,
    PostgresServer,
    die_with_parent,
    free_port,
    nats_server_binary,
    nats_server_version,
    port_is_free,
)
from shared import config
from shared.access import OPERATOR, USERS, new_password
from shared.retry import SERVICE_EXITED
from shared.runtime import EXIT_CONFIG, checked_settings, fatal_line

# A service that exits this often within the window is in a crash loop: said loudly, and still restarted (what it
# lacks, a server say, may come back).
CRASH_LOOP_EXITS = 3
CRASH_LOOP_WINDOW_S = 300.0
LOG_TAIL_BYTES = 256 * 1024  # of a service's run, read for its last error


class UpState(msgspec.Struct):
    """What `up` remembers in its state dir, so the next run reuses the same ports and data."""

    nats_port: int = 0
    cluster_ports: list[tuple[int, int, int]] = msgspec.field(default_factory=list)  # per node: client, http, route
    postgres_port: int = 0
    metrics_ports: dict[str, int] = msgspec.field(default_factory=dict)
    pid: int = 0


@dataclass
class ServiceProcess:
    spec: ServiceSpec
    env: dict[str, str]
    log_path: Path
    metrics_port: int
    name: str  # the service's name, numbered when it runs as several instances (classifier-2)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    exits: deque[float] = field(default_factory=deque)  # when it exited, those within CRASH_LOOP_WINDOW_S
    log_offset: int = 0  # where the current run's output starts in the log
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        if self.log_file is None:
            self.log_file = self.log_path.open("ab")
        self.log_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.spec.module], env=self.env, stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
        )

    def exited(self, now: float) -> int:
        """Count an exit; returns how many there were within CRASH_LOOP_WINDOW_S."""
        self.exits.append(now)
        while self.exits[0] < now - CRASH_LOOP_WINDOW_S:
            self.exits.popleft()
        return len(self.exits)

    def last_run_output(self) -> list[str]:
        """The lines the current (or just ended) run wrote to the log: at most its last LOG_TAIL_BYTES."""
        with self.log_path.open("rb") as log:
            start = max(self.log_offset, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES)
            log.seek(start)
            lines = log.read().decode(errors="replace").splitlines()
        return lines[1:] if start > self.log_offset else lines  # a tail's first line is cut

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
    cluster: bool = False  # a three-node NATS cluster of its own (streams and buckets at STREAM_REPLICAS=3)
    scale: dict[str, int] = field(default_factory=dict)  # instances per service, when more than one


def _say(message: str = "") -> None:
    print(config.redact(message), flush=True)


def _load_state(path: Path) -> UpState:
    try:
        return msgspec.json.decode(path.read_bytes(), type=UpState)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return UpState()


def last_fatal_line(lines: list[str], name: str) -> str | None:
    """The last line the service stopped with (`stocktracker <name>: ...`) among its output's `lines`."""
    prefix = fatal_line(name, "")
    return next((line for line in reversed(lines) if line.startswith(prefix)), None)


def last_error(lines: list[str], name: str) -> str | None:
    """The last error among a service's output `lines`: the line it stopped with, an error-level JSON log line
    summed up in one line, or the exception of a Python traceback (a crash nothing caught)."""
    prefix = fatal_line(name, "")
    unindented = None  # the line after a traceback's frames, which are indented: its exception
    for line in reversed(lines):
        if line.startswith(prefix):
            return line
        entry = _log_entry(line)
        if entry is not None and entry.get("level") in ("error", "critical"):
            return _error_summary(entry)
        if line.startswith("Traceback (most recent call last):") and unindented:
            return unindented
        if line and not line[0].isspace():
            unindented = line
    return None


_LOG_CONTEXT = frozenset({"event", "level", "logger", "timestamp", "service", "exception"})


def _log_entry(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        entry = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None
    return entry if isinstance(entry, dict) else None


def _error_summary(entry: dict[str, Any]) -> str:
    """Its event, its fields, and the last line of its traceback (the exception itself)."""
    fields = [f"{key}={value}" for key, value in entry.items() if key not in _LOG_CONTEXT]
    exception = str(entry.get("exception", "")).strip().splitlines()[-1:]
    return " ".join([str(entry.get("event", "")), *fields, *exception])


def configuration_refusal(services: Iterable[ServiceProcess]) -> str | None:
    """The line the first of `services` would stop with at start, in its environment, for its configuration; None
    when every one would start (as far as can be told here)."""
    for service in services:
        try:
            checked_settings(service.spec.actor, service.env)
        except config.ConfigError as err:
            return fatal_line(service.name, str(err))
    return None


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
        self.nats: NatsServer | NatsCluster | None = None
        self.postgres: PostgresServer | None = None
        self.services: list[ServiceProcess] = []
        self.stop_requested = threading.Event()
        self.gateway_url = ""
        self._chosen_ports: set[int] = set()

    def run(self) -> int:
        """Everything until Ctrl-C (0); EXIT_CONFIG with a service's one line when its configuration is refused,
        before anything starts or when the service exits so."""
        if self.state.pid and self.state.pid != os.getpid() and _alive(self.state.pid):
            print(f"stocktracker up: already running in {self.state_dir} (pid {self.state.pid})", file=sys.stderr)
            return 1
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        try:
            nats, postgres = self._own_servers()
            planned = self._plan_services(nats.url if nats else os.environ["NATS_URL"],
                                          postgres.url if postgres else os.environ["DATABASE_URL"])
            refusal = configuration_refusal(planned)
            if refusal is None:
                self._start_servers(nats, postgres)
                self._start_services(planned)
                self._remember()
                self._announce_when_ready()
                refusal = self._supervise()
        except (LocalServerError, subprocess.CalledProcessError) as err:
            print(f"stocktracker up: {err}", file=sys.stderr)
            return 1
        finally:
            self.shutdown()
        if refusal is not None:
            print(refusal, file=sys.stderr, flush=True)
            return EXIT_CONFIG
        return 0

    def _port(self, remembered: int, preferred: int = 0) -> int:
        """The port used last time if it is free, else the preferred one if free, else any free one; never one
        chosen already (every port is chosen before the servers that bind them start)."""
        port = next((candidate for candidate in (remembered, preferred)
                     if candidate and candidate not in self._chosen_ports and port_is_free(candidate)), 0)
        while not port or port in self._chosen_ports:
            port = free_port()
        self._chosen_ports.add(port)
        return port

    def _own_servers(self) -> tuple[NatsServer | NatsCluster | None, PostgresServer | None]:
        """The servers to run here, not started yet: those NATS_URL and DATABASE_URL do not name."""
        nats: NatsServer | NatsCluster | None = None
        if not os.environ.get("NATS_URL") and self.options.cluster:
            remembered = self.state.cluster_ports or [(0, 0, 0)] * CLUSTER_NODES
            nats = NatsCluster(self.state_dir / "cluster", binary=nats_server_binary(), passwords=self.passwords(),
                               ports=[(self._port(client), self._port(http), self._port(route))
                                      for client, http, route in remembered])
        elif not os.environ.get("NATS_URL"):
            nats = NatsServer(self.state_dir / "nats", port=self._port(self.state.nats_port),
                              binary=nats_server_binary(), passwords=self.passwords())
        postgres = None if os.environ.get("DATABASE_URL") else PostgresServer(
            self.state_dir / "postgres", port=self._port(self.state.postgres_port))
        return nats, postgres

    def passwords(self) -> dict[str, str]:
        """Every NATS user's password for the servers of our own, made once and kept in the state dir (readable
        by its owner only), so a restart of `up` and the tools find them."""
        return nats_passwords(self.state_dir)

    def _plan_services(self, nats_url: str, database_url: str) -> list[ServiceProcess]:
        """Every built service with the environment it will run in, not started yet; with servers of our own, each
        as its own NATS user."""
        base = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url, **_ingest_env(self.options)}
        own_nats = not os.environ.get("NATS_URL")
        if self.options.cluster:
            base.setdefault("STREAM_REPLICAS", str(CLUSTER_NODES))
        planned = []
        for spec in SERVICES:
            count = self.options.scale.get(spec.name, 1)
            for index in range(count):
                name = spec.name if count == 1 else f"{spec.name}-{index + 1}"
                port = self._port(self.state.metrics_ports.get(name, 0), spec.metrics_port if index == 0 else 0)
                self.state.metrics_ports[name] = port
                user = {"NATS_USER": spec.name, "NATS_PASSWORD": self.passwords()[spec.name]} if own_nats else {}
                planned.append(ServiceProcess(spec, {**base, **user, "METRICS_PORT": str(port), **self._instance_env(
                    spec, index, count)}, self.state_dir / "logs" / f"{name}.log", port, name))
        return planned

    def _instance_env(self, spec: ServiceSpec, index: int, count: int) -> dict[str, str]:
        """What tells one of several instances of a service from the others: a gateway its port, a tracker its
        share of the symbols (a tracker that needs every symbol refuses PARTITION at its check); ingest and the
        recorder run side by side as they are (redundancy: JetStream and the inserts drop what the other sent)."""
        if count == 1:
            return {}
        if spec.name == "gateway":
            return {"GATEWAY_PORT": str(self.settings.gateway_port + index)}
        if spec.name in ("ingest", "recorder"):
            return {}
        return {"PARTITION": f"{index}/{count}"}

    def _start_servers(self, nats: NatsServer | NatsCluster | None, postgres: PostgresServer | None) -> None:
        _say(f"stock-tracker up (state and logs in {self.state_dir})")
        if nats is None:
            _say(f"  NATS          {os.environ['NATS_URL']}  (from NATS_URL)")
        elif isinstance(nats, NatsCluster):
            self.nats = nats
            nats.start()
            self.state.cluster_ports = [(node.port, node.http_port, node.route_port) for node in nats.nodes]
            _say(f"  NATS          {nats.url}  ({len(nats.nodes)}-node cluster, nats-server "
                 f"{nats_server_version(nats.nodes[0].binary)}, STREAM_REPLICAS {CLUSTER_NODES})")
        else:
            self.nats = nats
            self.state.nats_port = self._started(nats)
            _say(f"  NATS          {nats.url}  (nats-server {nats_server_version(nats.binary)})")
        if postgres is None:
            _say(f"  PostgreSQL    {os.environ['DATABASE_URL']}  (from DATABASE_URL)")
        else:
            self.postgres = postgres
            self.state.postgres_port = self._started(postgres)
            _say(f"  PostgreSQL    {postgres.url}")

    @staticmethod
    def _started(server: NatsServer | PostgresServer) -> int:
        """Start one of our own servers; its port, to remember for the next run."""
        server.start()
        return server.port

    def _start_services(self, planned: list[ServiceProcess]) -> None:
        settings = self.settings
        env = {**os.environ, **_ingest_env(self.options)}
        gateway_host = "127.0.0.1" if settings.gateway_host in ("0.0.0.0", "") else settings.gateway_host
        self.gateway_url = f"http://{gateway_host}:{settings.gateway_port}"
        source = env.get("INGEST_SOURCE", settings.ingest_source)
        detail = {"sim": f"SIM_SPEED {env.get('SIM_SPEED', settings.sim_speed)}",
                  "replay": f"{env.get('REPLAY_FILE', settings.replay_file)} at "
                            f"REPLAY_SPEED {env.get('REPLAY_SPEED', settings.replay_speed)}",
                  "ssi": settings.ssi_stream_url}.get(source, "")
        _say(f"  Source        {source}  ({detail})")
        _say(f"  Dashboard     {self.gateway_url}/")
        gateways = self.options.scale.get("gateway", 1)
        if gateways > 1:  # every one serves the same view of the same buckets
            _say("  Gateways      " + "  ".join(f"http://{gateway_host}:{settings.gateway_port + index}/"
                                                for index in range(gateways)))
        _say(f"  REST          {self.gateway_url}/api/market/snapshot  (OpenAPI {self.gateway_url}/api/openapi.json)")
        _say(f"  WebSocket     ws://{gateway_host}:{settings.gateway_port}/ws/market | foreign | index | derivatives")
        _say("Services:")
        for service in planned:
            service.start()
            self.services.append(service)
            assert service.process is not None
            _say(f"  {service.name:<12} pid {service.process.pid:<7} metrics "
                 f"http://127.0.0.1:{service.metrics_port}/metrics")

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

    def _supervise(self) -> str | None:
        """Restart a service that exits, waiting longer after each crash, until told to stop; returns None then.
        A service that exits with EXIT_CONFIG is not restarted (nothing would change): returns its one line."""
        while not self.stop_requested.wait(0.5):
            for service in self.services:
                assert service.process is not None
                code = service.process.poll()
                if code is None:
                    continue
                name = service.name
                if code == EXIT_CONFIG:
                    _say(f"{name} exited with code {code}: its configuration is refused, which no restart mends; "
                         f"stopping everything (log: {service.log_path})")
                    return (last_fatal_line(service.last_run_output(), service.spec.name)
                            or fatal_line(name, f"exited with code {code} (configuration), see {service.log_path}"))
                now = time.monotonic()
                if service.next_start == 0.0:
                    delay = SERVICE_EXITED.wait(service.restarts + 1)
                    service.next_start = now + delay
                    _say(f"{name} exited with code {code}; restarting in {delay} s (log: {service.log_path})")
                    exits = service.exited(now)
                    if exits >= CRASH_LOOP_EXITS:
                        error = last_error(service.last_run_output(), service.spec.name) or "none logged"
                        _say(f"WARNING: {name} is in a crash loop: {exits} exits within "
                             f"{CRASH_LOOP_WINDOW_S / 60:g} min; still restarting with backoff. Last error: {error}")
                elif now >= service.next_start:
                    service.restarts += 1
                    service.next_start = 0.0
                    service.start()
                    assert service.process is not None
                    _say(f"{name} restarted (pid {service.process.pid}, restart #{service.restarts})")
        return None

    def shutdown(self) -> None:
        for service in self.services:
            service.stop()
            _say(f"stopped {service.name}")
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


PASSWORDS_FILE = "nats-passwords.json"


def nats_passwords(state_dir: Path) -> dict[str, str]:
    """Every NATS user's password (shared/access.py) for `up`'s own servers: made at the first start, then kept."""
    path = state_dir / PASSWORDS_FILE
    with contextlib.suppress(OSError, msgspec.DecodeError, msgspec.ValidationError):
        passwords = msgspec.json.decode(path.read_bytes(), type=dict[str, str])
        if set(passwords) >= set(USERS):
            return passwords
    passwords = {user: new_password() for user in USERS}
    state_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(msgspec.json.encode(passwords))
    return passwords


def remembered_nats_url(state_dir: Path) -> str | None:
    """The NATS URL a running `up` started, as its operator user, for the tools (`status`, `tap`, `dlq`, `replay`)
    when NATS_URL is unset."""
    state = _load_state(state_dir / "up.json")
    ports = [client for client, _, _ in state.cluster_ports] if state.cluster_ports else [state.nats_port]
    if not all(ports):
        return None
    password = nats_passwords(state_dir)[OPERATOR]
    return ",".join(f"nats://{OPERATOR}:{password}@127.0.0.1:{port}" for port in ports)
