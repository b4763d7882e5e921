"""Every connection to SSI verifies its certificate: a server with a certificate nobody vouches for (a proxy, a
spoofed host) receives neither the consumer secret (REST) nor the bearer token (the stream's negotiation), while a
server whose certificate is trusted is connected to over TLS as usual."""

from __future__ import annotations

import inspect
import ssl
import subprocess
from pathlib import Path

import msgspec
import pytest
from fake_ssi import FakeSsi

from services.ingest.ssi_live import ChannelStream, SsiError, SsiSource
from shared import config


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 signed by itself: no CA on this machine vouches for it."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context


def _source(rest: FakeSsi, stream: FakeSsi) -> SsiSource:
    settings = msgspec.structs.replace(
        config.load({}), ingest_source="ssi", ssi_url=rest.url, ssi_stream_url=stream.url,
        ssi_consumer_id=rest.consumer_id, ssi_consumer_secret=rest.consumer_secret, ssi_channels=["X:ALL"])
    return SsiSource(settings, market_open=lambda: True)


async def test_rest_refuses_a_certificate_nobody_vouches_for(self_signed: tuple[Path, ssl.SSLContext]) -> None:
    async with FakeSsi(tls=self_signed[1]) as spoof:
        source = _source(spoof, spoof)
        try:
            with pytest.raises(SsiError, match="CERTIFICATE_VERIFY_FAILED"):
                await source.reference()
        finally:
            await source.close()
        assert spoof.requests_seen == 0  # the consumer secret never left this machine
        assert spoof.token_requests == 0


async def test_the_stream_refuses_a_certificate_nobody_vouches_for(self_signed: tuple[Path, ssl.SSLContext]) -> None:
    async with FakeSsi() as rest, FakeSsi(tls=self_signed[1]) as spoof:
        source = _source(rest, spoof)
        try:
            with pytest.raises(SsiError, match="CERTIFICATE_VERIFY_FAILED"):
                await source._connect(ChannelStream("X:ALL"))
        finally:
            await source.close()
        assert rest.token_requests == 1  # the token was issued over plain HTTP by the local fake ...
        assert spoof.requests_seen == 0  # ... and never reached the server it could not verify
        assert spoof.auth_failures == 0


async def test_a_trusted_certificate_is_connected_to(self_signed: tuple[Path, ssl.SSLContext],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cert, context = self_signed
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # what requests (REST, the negotiation) trusts
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(cert))  # what websocket-client (the stream) trusts
    async with FakeSsi(tls=context) as ssi:
        source = _source(ssi, ssi)
        try:
            await source._connect(ChannelStream("X:ALL"))
            await ssi.wait_for_clients(1)
            assert ssi.subscriptions == ["X:ALL"]
        finally:
            await source.close()


def test_the_client_internals_the_adapter_relies_on_are_there() -> None:
    """ssi-fc-data is pinned; if an upgrade renames what makes its stream verify certificates, fail here."""
    from ssi_fc_data import fc_md_stream
    from ssi_fc_data.signalr import Connection
    from ssi_fc_data.signalr.transports import WebsocketTransport

    assert fc_md_stream.Connection.func is Connection  # made to verify (a partial with verify_ssl=True) ...
    assert fc_md_stream.Connection.keywords == {"verify_ssl": True}
    assert "verify_ssl" in inspect.signature(WebsocketTransport.__init__).parameters  # ... which reaches this
