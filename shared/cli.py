"""`stocktracker`: run the whole system on this machine (`up`) and inspect its configuration (`config`)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from shared import config
from shared.catalog import SERVICES, ServiceSpec
from shared.local import (
    LocalServerError,
    NatsServer,
    PostgresServer,
    nats_server_binary,
    nats_server_version,
    port_is_free,
)

RESTART_BACKOFF_S = (1, 2, 5, 10, 30)


class UpState(msgspec.Struct):
    """What `up` remembers in its state dir, so the next run reuses the same ports and data."""

    nats_port: int = 0
    postgres_port: int = 0


@dataclass
class ServiceProcess:
    spec: ServiceSpec
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_file: object = field(default=None, repr=False)

    def start(self) -> None:
        if self.log_file is None:
            self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.spec.module],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, timeout: float = 20.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _say(message: str = "") -> None:
    print(message, flush=True)


def _load_state(path: Path) -> UpState:
    try:
        return msgspec.json.decode(path.read_bytes(), type=UpState)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return UpState()


def _reuse_port(remembered: int) -> int:
    return remembered if remembered and port_is_free(remembered) else 0


def up(state_dir: Path | None) -> int:
    try:
        settings = config.load()
    except config.ConfigError as err:
        print(f"stocktracker up: {err}", file=sys.stderr)
        return 2
    state_dir = (state_dir or Path(settings.state_dir)).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    state_path = state_dir / "up.json"
    state = _load_state(state_path)
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)

    nats: NatsServer | None = None
    postgres: PostgresServer | None = None
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    services: list[ServiceProcess] = []
    try:
        if "NATS_URL" in os.environ:
            nats_url = os.environ["NATS_URL"]
            _say(f"NATS        {nats_url} (from NATS_URL)")
        else:
            binary = nats_server_binary()
            nats = NatsServer(state_dir / "nats", port=_reuse_port(state.nats_port), binary=binary)
            nats_url = nats.start()
            state.nats_port = nats.port
            _say(f"NATS        {nats_url}  (nats-server {nats_server_version(binary)}, store {nats.store_dir})")
        if os.environ.get("DATABASE_URL"):
            database_url = os.environ["DATABASE_URL"]
            _say(f"PostgreSQL  {database_url} (from DATABASE_URL)")
        else:
            postgres = PostgresServer(state_dir / "postgres", port=_reuse_port(state.postgres_port))
            database_url = postgres.start()
            state.postgres_port = postgres.port
            _say(f"PostgreSQL  {database_url}  (data {postgres.data_dir})")
        state_path.write_bytes(msgspec.json.encode(state))

        base_env = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url, "LOG_FORMAT": "json"}
        _say("Services (logs in " + str(logs) + "):")
        for spec in SERVICES:
            if not spec.is_built():
                _say(f"  {spec.name:<12} not built yet")
                continue
            env = {**base_env, "METRICS_PORT": str(spec.metrics_port)}
            service = ServiceProcess(spec, env, logs / f"{spec.name}.log")
            service.start()
            services.append(service)
            _say(f"  {spec.name:<12} running, metrics http://127.0.0.1:{spec.metrics_port}/metrics")
        _say("Ctrl-C stops everything.")
        _supervise(services, stop)
    except (LocalServerError, subprocess.CalledProcessError) as err:
        print(f"stocktracker up: {err}", file=sys.stderr)
        return 1
    finally:
        for service in services:
            service.stop()
            _say(f"stopped {service.spec.name}")
        if postgres:
            postgres.stop()
            _say("stopped PostgreSQL")
        if nats:
            nats.stop()
            _say("stopped NATS")
    return 0


def _supervise(services: list[ServiceProcess], stop: threading.Event) -> None:
    """Restart a service that exits, waiting longer after each crash."""
    while not stop.wait(0.5):
        for service in services:
            assert service.process is not None
            code = service.process.poll()
            if code is None:
                continue
            now = time.monotonic()
            if service.next_start == 0.0:
                delay = RESTART_BACKOFF_S[min(service.restarts, len(RESTART_BACKOFF_S) - 1)]
                service.next_start = now + delay
                _say(f"{service.spec.name} exited with code {code}; restarting in {delay} s")
            elif now >= service.next_start:
                service.restarts += 1
                service.next_start = 0.0
                service.start()
                _say(f"{service.spec.name} restarted (restart #{service.restarts})")


def show_config() -> int:
    try:
        settings = config.load()
    except config.ConfigError as err:
        print(f"stocktracker config: {err}", file=sys.stderr)
        return 2
    for name, (description, _default) in config.documented_settings().items():
        value = getattr(settings, name.lower())
        if isinstance(value, list):
            value = ",".join(value)
        _say(f"{name}={value}    # {description}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stocktracker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("up", help="run NATS, PostgreSQL and every service on this machine")
    run.add_argument("--state-dir", type=Path, help="where data and logs live (default: STATE_DIR)")
    commands.add_parser("config", help="print every setting with its current value")
    args = parser.parse_args(argv)
    if args.command == "up":
        sys.exit(up(args.state_dir))
    sys.exit(show_config())


if __name__ == "__main__":
    main()
