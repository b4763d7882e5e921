"""Webhook delivery: every alert on DERIVED (`alert.*.*`) POSTed to ALERT_WEBHOOK_URL, in stream order, once each.

Its own reader of the stream with its own saved position (KV `checkpoints`, key `alerts.webhook`: the DERIVED
incarnation and the last sequence handled), apart from the rules: a receiver that is slow or down holds back only
this reader, never the rules, and the stream is the buffer meanwhile. A restart goes on after the last alert
handled, so an alert is POSTed again only when the service stopped between the receiver's answer and the position's
save; each POST carries the alert's natural key as `Idempotency-Key` for the receiver to drop such a repeat.

The first start without a saved position begins after the stream's last message: alerts from when the webhook was
first configured, not the last day's. A DERIVED stream made anew (another creation time) is read from its start.

Per alert: a 2xx answer is delivered; a connection failure, a timeout (ALERT_WEBHOOK_TIMEOUT_S), 408, 425, 429 or
5xx is retried (WEBHOOK_AWAY), for as long as it takes; any other answer (a 3xx is not followed, a 4xx) refuses
this alert for good: it is dead-lettered with the status and the next one is sent. Logs name the receiver's host
only: a webhook URL often carries its token in the path or query.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from prometheus_client import Counter

from shared import bus
from shared.bus import StreamReader
from shared.config import ConfigError, Settings
from shared.deadletter import Refused
from shared.messages.domain import Alert
from shared.retry import NATS_AWAY, WEBHOOK_AWAY, retrying
from shared.runtime import Context
from shared.subjects import ALERTS, DERIVED, Bucket

POSITION_KEY = "alerts.webhook"  # in KV checkpoints, beside the alerts service's own
SIGNATURE_HEADER = "X-StockTracker-Signature"
RETRIED_STATUSES = frozenset({408, 425, 429})  # and every 5xx

DELIVERIES = Counter("stocktracker_alert_webhook_total",
                     "Alert webhook POSTs by outcome: delivered, retried (to be tried again), refused (dead-lettered)",
                     ["outcome"])


class WebhookPosition(msgspec.Struct):
    stream_created: datetime  # DERIVED's creation time: a stream made anew starts its sequences again
    sequence: int  # the last alert handled (delivered or refused)


class _Retry(Exception):
    """An answer or failure worth trying again."""


def receiver_host(url: str) -> str:
    """What a log line may say of the receiver: its host and port, never the path, query or credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def check_webhook_url(url: str) -> None:
    """HTTPS, or plain HTTP to this machine only (a receiver beside the service): alerts and any token in the URL
    never cross a network in the clear."""
    if not url:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and _is_loopback(host):
        return
    raise ConfigError(f"invalid ALERT_WEBHOOK_URL (host {host or '?'}): https://, or http:// to a loopback address")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookDelivery:
    def __init__(self, ctx: Context) -> None:
        settings: Settings = ctx.settings
        self.ctx = ctx
        self.url = settings.alert_webhook_url
        self.host = receiver_host(self.url)
        self._secret = settings.alert_webhook_secret.encode()
        self._timeout = aiohttp.ClientTimeout(total=settings.alert_webhook_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._reader: StreamReader | None = None
        self._positions: KeyValue | None = None
        self._stream_created: datetime | None = None
        self.position = 0
        self.delivered = 0
        self.refused = 0
        self.retries = 0
        self._halted = False
        self._decode = msgspec.json.Decoder(Alert).decode

    @property
    def pending(self) -> int:
        return self._reader.backlog if self._reader is not None else 0

    async def prepare(self) -> None:
        """The position to go on from, saved before anything else happens: on a first start, the stream's end,
        taken before the rules raise anything."""
        js = self.ctx.js
        self._positions = await bus.electing(lambda: js.key_value(str(Bucket.CHECKPOINTS)))
        info = await bus.electing(lambda: js.stream_info(DERIVED.name))
        self._stream_created = info.created
        saved = await self._saved_position()
        if saved is None:
            self.position = info.state.last_seq
        elif saved.stream_created != info.created:
            self.position = 0
        else:
            self.position = saved.sequence
        await self._save()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers={"User-Agent": "stock-tracker-alerts"})
        self._reader = await bus.consume_from(self.ctx.js, DERIVED, [ALERTS], self._deliver,
                                              start_sequence=self.position + 1)
        self.ctx.log.info("webhook delivery", receiver=self.host, resumed_after=self.position)

    async def _saved_position(self) -> WebhookPosition | None:
        assert self._positions is not None
        positions = self._positions
        try:
            entry = await bus.electing(lambda: positions.get(POSITION_KEY))
        except nats.js.errors.KeyNotFoundError:
            return None
        try:
            return msgspec.json.decode(entry.value or b"", type=WebhookPosition)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            self.ctx.log.error("webhook position unreadable: starting after the stream's last message",
                               error=str(err))
            return None

    async def _save(self) -> None:
        assert self._positions is not None
        assert self._stream_created is not None
        await self._positions.put(POSITION_KEY, msgspec.json.encode(WebhookPosition(self._stream_created,
                                                                                     self.position)))

    async def _deliver(self, subject: str, payload: bytes, position: bus.Delivery) -> None:
        if self._halted:
            return  # stopping on a failure: the position must not pass the alert it failed on
        try:
            await self._handle(subject, payload, position)
        except Exception as err:
            self._halted = True
            self.ctx.fail(f"webhook delivery stopped at {subject} #{position.stream_sequence}: {err!r}")
            raise

    async def _handle(self, subject: str, payload: bytes, position: bus.Delivery) -> None:
        try:
            alert = self._decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            await self._refuse(subject, position, payload, err)
        else:
            try:
                await retrying(lambda: self._post(alert, payload), WEBHOOK_AWAY, retry_on=(_Retry,),
                               on_failure=self._retrying)
                self.delivered += 1
                DELIVERIES.labels("delivered").inc()
            except Refused as err:  # an answer that will not change by trying again
                await self._refuse(subject, position, payload, err)
        self.position = position.stream_sequence
        await retrying(self._save, NATS_AWAY, retry_on=(nats.errors.Error, TimeoutError))  # a KV put: NATS's policy

    async def _post(self, alert: Alert, body: bytes) -> None:
        assert self._session is not None
        headers = {"Content-Type": "application/json", "Idempotency-Key": alert.natural_key()}
        if self._secret:
            headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        try:
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as answer:
                status = answer.status
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise _Retry(type(err).__name__) from None  # the error's text may quote the URL
        if 200 <= status < 300:
            return
        if status >= 500 or status in RETRIED_STATUSES:
            raise _Retry(f"HTTP {status}")
        raise Refused("webhook_refused", f"the receiver answered HTTP {status}")

    def _retrying(self, err: BaseException, failures: int, wait: float) -> None:
        self.retries += 1
        DELIVERIES.labels("retried").inc()
        log = self.ctx.log.warning if failures <= 3 or failures % 20 == 0 else self.ctx.log.debug
        log("webhook not delivered; retrying", receiver=self.host, error=str(err), attempt=failures, retry_in_s=wait)

    async def _refuse(self, subject: str, position: bus.Delivery, payload: bytes, err: Exception) -> None:
        self.refused += 1
        DELIVERIES.labels("refused").inc()
        self.ctx.log.error("alert not delivered: dead-lettered", receiver=self.host, subject=subject, error=str(err))
        await self.ctx.dead_letters.put(stream=DERIVED.name, subject=subject, sequence=position.stream_sequence,
                                        payload=payload, error=err)

    async def stop(self) -> None:
        try:
            if self._reader is not None:
                await self._reader.stop()
        finally:  # also when the stop is cut short: no connection left open
            if self._session is not None:
                await self._session.close()

    def status(self) -> dict[str, Any]:
        return {"receiver": self.host, "position": self.position, "pending": self.pending,
                "delivered": self.delivered, "refused": self.refused, "retries": self.retries}
