"""TLS on the bus as the deployment runs it (deploy/nats/tls-on/ over tls/, certificates from deploy/make-certs.sh):
services verify the nodes' certificate against NATS_TLS_CA, a client that cannot verify it stops with the
configuration exit, and three nodes form their cluster over mutual-TLS routes."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path

import nats
import pytest

from launcher.local import NATS_CONF_DIR, NatsCluster, _accepts_connections, _ChildServer, free_port, nats_server_binary
from shared import bus, config
from shared.subjects import MARKET

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    subprocess.run(["sh", str(REPO / "deploy/make-certs.sh"), str(folder)], check=True, capture_output=True)
    return folder


@pytest.fixture
def tls_env(certs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What a node's environment gives the TLS files: its certificate, key and the CA."""
    monkeypatch.setenv("NATS_TLS_CERT", str(certs / "server.pem"))
    monkeypatch.setenv("NATS_TLS_KEY", str(certs / "server-key.pem"))
    monkeypatch.setenv("NATS_TLS_CA", str(certs / "ca.pem"))
    return certs


def deployed_conf(folder: Path) -> Path:
    """deploy/nats as the deployment mounts it: tls-on/ in place of tls/."""
    target = folder / "nats"
    shutil.copytree(NATS_CONF_DIR, target)
    shutil.rmtree(target / "tls")
    shutil.copytree(NATS_CONF_DIR / "tls-on", target / "tls")
    return target


class _TlsServer(_ChildServer):
    """One nats-server whose client connections are TLS, from the deployment's client TLS file."""

    def __init__(self, folder: Path) -> None:
        super().__init__("nats-server tls", folder / "nats.log")
        self.port = free_port()
        conf = deployed_conf(folder)
        (conf / "single.conf").write_text(f"listen: 127.0.0.1:{self.port}\njetstream {{store_dir: {folder / 'js'}}}\n"
                                          "include ./tls/client.conf\n")
        self.argv = [str(nats_server_binary()), "-c", str(conf / "single.conf")]

    def start(self) -> str:
        self._spawn(self.argv)
        self._wait_until(lambda: _accepts_connections("127.0.0.1", self.port), 20)
        return f"tls://127.0.0.1:{self.port}"


async def test_a_service_verifies_the_servers_certificate(tls_env: Path, tmp_path: Path) -> None:
    server = _TlsServer(tmp_path)
    url = server.start()
    try:
        settings = config.load({"NATS_URL": url, "NATS_TLS_CA": str(tls_env / "ca.pem")})
        nc = await bus.connect(settings, "tests")
        try:
            await bus.ensure_topology(nc.jetstream(), settings)
            assert nc.connected_url is not None
            assert nc.connected_url.scheme == "tls"
        finally:
            await nc.close()
        # Without the CA, the certificate does not verify (the system's CAs do not know ours): a configuration
        # error, said at once, not a reconnect loop.
        with pytest.raises(bus.BusError, match="certificate") as refused:
            await bus.connect(config.load({"NATS_URL": url, "NATS_CONNECT_TIMEOUT_S": "20"}), "tests")
        assert not refused.value.restartable
        # A plain client is not served in clear.
        with pytest.raises(Exception):  # noqa: B017, PT011 (nats-py's own error types for a refused upgrade)
            await nats.connect(url.replace("tls://", "nats://"), tls=None, allow_reconnect=False, connect_timeout=2)
    finally:
        server.stop()


def _routes(http_port: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/routez", timeout=5) as reply:
        return json.loads(reply.read())["routes"]


def _route_speaks(route_port: int, certs: Path) -> tuple[bytes, dict[str, object]]:
    """What a node's route port answers a plain connection (nothing: it waits for a TLS handshake), and the INFO it
    sends once a peer with a certificate of our CA has shaken hands."""
    with socket.create_connection(("127.0.0.1", route_port), timeout=2) as plain:
        try:
            clear = plain.recv(64)
        except TimeoutError:
            clear = b""
    context = ssl.create_default_context(cafile=certs / "ca.pem")
    context.load_cert_chain(certs / "server.pem", certs / "server-key.pem")
    with socket.create_connection(("127.0.0.1", route_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as route:
        line = route.makefile("rb").readline()
    assert line.startswith(b"INFO ")
    return clear, json.loads(line[5:])


async def test_three_nodes_form_their_cluster_over_mutual_tls(tls_env: Path, tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster", conf=deployed_conf(tmp_path) / "cluster.conf")
    cluster.start()
    try:
        urls = [url.replace("nats://", "tls://") for url in cluster.urls]
        settings = config.load({"NATS_URL": ",".join(urls), "NATS_TLS_CA": str(tls_env / "ca.pem"),
                                "STREAM_REPLICAS": "3"})
        nc = await bus.connect(settings, "tests")
        try:
            await bus.ensure_topology(nc.jetstream(), settings)  # R3: the nodes replicate over their routes
            info = await nc.jetstream().stream_info(MARKET.name)
            assert info.cluster is not None
            assert len(info.cluster.replicas or []) == 2  # the two followers, besides the leader
        finally:
            await nc.close()
        for node in cluster.nodes:  # each node routes to both others, and only over TLS, verifying the peer
            assert len(await asyncio.to_thread(_routes, node.http_port)) >= 2
            clear, info = await asyncio.to_thread(_route_speaks, node.route_port, tls_env)
            assert clear == b""  # nothing in clear
            assert info.get("tls_required") is True
            assert info.get("tls_verify") is True
    finally:
        cluster.stop()
