"""The NATS protocol as our services speak it: nats-py's client and parser, leaner on the paths a service spends its
time on (reading and publishing messages with headers). Everything here touches nats-py internals (its parser's
state, `Client._ps`, `_process_msg`, `_send_command`, `_flush_pending`, `_max_payload`): nats-py is pinned to the
release these were read from, and tests/test_bus_protocol.py fails loudly if a name is gone."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.protocol.parser import (
    AWAITING_CONTROL_LINE,
    AWAITING_MSG_PAYLOAD,
    CRLF_SIZE,
    MAX_CONTROL_LINE_SIZE,
    Parser,
)

MSG_ID = "Nats-Msg-Id"


RawReceiver = Callable[[bytes, bytes, bytes, bytes | None], None]  # subject, reply, payload, headers


class _Parser(Parser):
    """nats-py's protocol parser with the message path (MSG and HMSG lines, then their payloads) done by slicing
    instead of regular expressions: on a consumer reading tens of thousands of messages a second, parsing was its
    largest single cost. A subscription with a raw route (`_Client.route_raw`) gets its messages straight from here.
    Any other operation (INFO, PING, PONG, +OK, -ERR) is one line, handed to nats-py's own parser alone."""

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf.extend(data)
        routes = self.nc.raw_routes
        while buf:
            if self.state == AWAITING_CONTROL_LINE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_CONTROL_LINE_SIZE:
                        raise nats.errors.ProtocolError("nats: control line too long")
                    return
                if not buf.startswith((b"MSG ", b"HMSG ")):
                    line = bytes(buf[: end + CRLF_SIZE])
                    del buf[: end + CRLF_SIZE]
                    await Parser(self.nc).parse(line)  # one line alone: messages after it still take their routes
                    continue
                self._message_line(bytes(buf[:end]).split())
                del buf[: end + CRLF_SIZE]
            needed = self.needed
            if len(buf) < needed + CRLF_SIZE:
                return  # the rest of the payload comes with the next read
            header_size = self.header_needed
            headers = bytes(buf[:header_size]) if header_size else None
            payload = bytes(buf[header_size:needed])
            del buf[: needed + CRLF_SIZE]
            self.state = AWAITING_CONTROL_LINE
            arguments = self.msg_arg
            receiver = routes.get(arguments["sid"])
            if receiver is not None:
                receiver(arguments["subject"], arguments["reply"], payload, headers)
            else:
                await self.nc._process_msg(arguments["sid"], arguments["subject"], arguments["reply"], payload,
                                           headers)

    def _message_line(self, fields: list[bytes]) -> None:
        """MSG <subject> <sid> [reply] <size> or HMSG <subject> <sid> [reply] <header size> <total size>."""
        with_headers = fields[0] == b"HMSG"
        sizes = 2 if with_headers else 1
        if len(fields) not in (3 + sizes, 4 + sizes):
            raise nats.errors.ProtocolError("nats: malformed MSG")
        arguments = self.msg_arg
        arguments["subject"] = fields[1]
        arguments["sid"] = int(fields[2])
        arguments["reply"] = fields[3] if len(fields) == 4 + sizes else b""
        self.needed = int(fields[-1])
        self.header_needed = int(fields[-2]) if with_headers else 0
        self.state = AWAITING_MSG_PAYLOAD


class _Client(Client):
    """nats-py's client, leaner where a service spends its time: every message our streams store carries its
    Nats-Msg-Id, so every message read has headers to parse, and every message published one to write. nats-py
    checks each header name character by character on both paths (a sixth of a consumer's time); here headers are
    split once, and the one header we publish goes out in one formatted line. Same protocol, same results."""

    def __init__(self) -> None:
        super().__init__()
        self._ps = _Parser(self)
        self.raw_routes: dict[int, RawReceiver] = {}

    def route_raw(self, sub: Any, receiver: RawReceiver) -> None:
        """Hand `sub`'s messages to `receiver` straight from the parser (no Msg, no header parsing, no queue)."""
        self.raw_routes[sub._id] = receiver

    def unroute_raw(self, sub: Any) -> None:
        self.raw_routes.pop(sub._id, None)

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        headers: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, separator, value = line.partition(b":")
            name = name.strip()
            if not separator or not name or b" " in name or b"\t" in name or not name.isascii():
                continue
            headers[name.decode("ascii")] = value.strip().decode("utf-8", "replace")
        return headers

    async def publish_with_id(self, subject: str, payload: bytes, reply: str, msg_id: str | None) -> None:
        """`publish` of a message with an optional Nats-Msg-Id, replies going to `reply` (the publisher's own inbox).
        Subjects and ids are ours (symbols are checked by ingest), but a space or line break in one would corrupt the
        protocol stream: refused here."""
        if _UNSAFE.search(subject) or (msg_id is not None and _UNSAFE.search(msg_id)):
            raise nats.errors.BadSubjectError
        if self.is_closed:
            raise nats.errors.ConnectionClosedError
        if len(payload) > self._max_payload:
            raise nats.errors.MaxPayloadError
        if msg_id is None:
            command = b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), len(payload), payload)
        else:
            header = f"NATS/1.0\r\n{MSG_ID}: {msg_id}\r\n\r\n".encode()
            command = b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), reply.encode(), len(header),
                                                          len(header) + len(payload), header, payload)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += len(payload)
        await self._send_command(command)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()


_UNSAFE = re.compile(r"[\s]")


def _chain(
    first: Callable[[], Awaitable[None]] | None, second: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    async def both() -> None:
        if first is not None:
            await first()
        await second()

    return both
