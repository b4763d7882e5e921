"""The bus's lean NATS protocol paths agree byte for byte with nats-py's own: the message parser on any split of the
byte stream, and the publish command with and without a Nats-Msg-Id. And every nats-py internal the bus relies on is
still there: nats-py is pinned to the release they were read from, and an upgrade that drops one fails here, loudly,
before anything runs against a server."""

from __future__ import annotations

from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client
from nats.protocol.parser import Parser

from shared import bus
from shared.bus import protocol

TRANSCRIPT = (
    b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n"
    b"MSG md.trade.FPT 1 5\r\nhello\r\n"
    b"+OK\r\n"
    b"HMSG md.quote.FPT 2 $JS.ACK.MARKET.c.1.7.3.1764000000000000000.12 34 41\r\n"
    b"NATS/1.0\r\nNats-Msg-Id: q:FPT:1\r\n\r\n{\"a\":1}\r\n"
    b"PING\r\n"
    b"MSG _INBOX.abc.7 3 reply.to 0\r\n\r\n"
    b"HMSG _INBOX.abc.8 3 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
    b"PONG\r\n"
    b"MSG md.index.VN30 1 11\r\n{\"v\":\"a b\"}\r\n"
)


class Recorder:
    """Stands in for the client behind a parser: remembers what the parser hands over."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.raw_routes: dict[int, Any] = {}

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, payload: bytes, headers: bytes | None) -> None:
        self.seen.append(("msg", sid, subject, reply, payload, headers))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.seen.append(("info", info))

    async def _process_ping(self) -> None:
        self.seen.append(("ping",))

    async def _process_pong(self) -> None:
        self.seen.append(("pong",))

    async def _process_err(self, message: str) -> None:
        self.seen.append(("err", message))


async def parsed(parser_type: type[Parser], chunks: list[bytes]) -> list[tuple[Any, ...]]:
    client = Recorder()
    parser = parser_type(client)
    for chunk in chunks:
        await parser.parse(chunk)
    return client.seen


async def test_parser_matches_nats_py_on_every_split_of_the_stream() -> None:
    expected = await parsed(Parser, [TRANSCRIPT])
    assert [event[0] for event in expected] == ["info", "msg", "msg", "ping", "msg", "msg", "pong", "msg"]
    for cut in range(1, len(TRANSCRIPT)):
        assert await parsed(protocol._Parser, [TRANSCRIPT[:cut], TRANSCRIPT[cut:]]) == expected, f"split at {cut}"
    assert await parsed(protocol._Parser, [TRANSCRIPT[i : i + 1] for i in range(len(TRANSCRIPT))]) == expected


async def test_raw_routes_get_every_message_of_their_subscription_whatever_comes_between() -> None:
    client = Recorder()
    routed: list[tuple[bytes, bytes, bytes, bytes | None]] = []
    client.raw_routes[1] = lambda subject, reply, payload, headers: routed.append((subject, reply, payload, headers))
    parser = protocol._Parser(client)
    await parser.parse(TRANSCRIPT)
    assert [payload for _, _, payload, _ in routed] == [b"hello", b'{"v":"a b"}']
    assert [event[0] for event in client.seen] == ["info", "msg", "ping", "msg", "msg", "pong"]


@pytest.mark.parametrize("line", [b"MSG md.trade.FPT 5\r\n", b"HMSG md.trade.FPT 1 a b 3 4 5\r\n"])
async def test_parser_refuses_a_malformed_message_line(line: bytes) -> None:
    with pytest.raises(nats.errors.ProtocolError):
        await parsed(protocol._Parser, [line])


async def sent_by_nats_py(subject: str, reply: str, payload: bytes, msg_id: str | None) -> bytes:
    client = Client()
    await client._send_publish(subject, reply, payload, len(payload), {bus.MSG_ID: msg_id} if msg_id else None)
    return b"".join(client._pending)


@pytest.mark.parametrize("msg_id", ["2026-11-24:FPT:1200", None])
async def test_publish_command_matches_nats_py(msg_id: str | None) -> None:
    client = protocol._Client()
    await client.publish_with_id("md.trade.FPT", b'{"price":85000}', "_INBOX.x.1", msg_id)
    assert b"".join(client._pending) == await sent_by_nats_py("md.trade.FPT", "_INBOX.x.1", b'{"price":85000}', msg_id)


@pytest.mark.parametrize(("subject", "msg_id"), [("md.trade.F PT", "k"), ("md.trade.FPT\r\nPUB x 1", "k"),
                                               ("md.trade.FPT", "key\r\nPUB x")])
async def test_publish_refuses_what_would_corrupt_the_protocol(subject: str, msg_id: str) -> None:
    client = protocol._Client()
    with pytest.raises(nats.errors.BadSubjectError):
        await client.publish_with_id(subject, b"{}", "_INBOX.x.1", msg_id)
    assert client._pending == []


NATS_PY_PINNED = "2.16.0"  # pyproject.toml pins this release: the internals below were read from it

CLIENT_INTERNALS = ("_ps", "_process_msg", "_send_command", "_flush_pending", "_flush_queue", "_pending",
                    "_pending_data_size", "_max_payload", "_server_info", "_reconnected_cb", "_disconnected_cb",
                    "stats", "connected_server_version")
PARSER_INTERNALS = ("buf", "state", "needed", "header_needed", "msg_arg", "nc", "parse")


def test_the_nats_py_internals_the_bus_relies_on_are_there() -> None:
    from importlib.metadata import version

    import nats.protocol.parser as parser_module

    assert version("nats-py") == NATS_PY_PINNED, "nats-py changed: re-read the internals shared/bus/protocol.py uses"
    client = Client()
    missing = [name for name in CLIENT_INTERNALS if not hasattr(client, name)]
    parser = Parser(client)
    missing += [f"Parser.{name}" for name in PARSER_INTERNALS if not hasattr(parser, name)]
    missing += [f"parser.{name}" for name in ("AWAITING_CONTROL_LINE", "AWAITING_MSG_PAYLOAD", "CRLF_SIZE",
                                              "MAX_CONTROL_LINE_SIZE") if not hasattr(parser_module, name)]
    assert missing == [], f"nats-py no longer has what shared/bus relies on: {missing}"
