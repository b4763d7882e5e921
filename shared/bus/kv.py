"""Keeping a receiver in step with a KV bucket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import structlog
from nats.js import JetStreamContext

from shared import metrics
from shared.retry import NATS_AWAY
from shared.subjects import Bucket

log = structlog.get_logger("bus")


@dataclass
class BucketWatch:
    """Keeps a receiver in step with a bucket: `on_load(entries)` with every current entry (a full replacement),
    then `on_change(key, value or None when deleted)` for each update. A watcher that stops (e.g. a NATS restart
    outlived its consumer) is re-created and the receiver re-synced with a fresh `on_load`. Without `on_load`, the
    current entries arrive through `on_change` one by one."""

    js: JetStreamContext
    bucket: Bucket
    on_change: Callable[[str, bytes | None], Awaitable[None] | None]
    on_load: Callable[[dict[str, bytes]], Awaitable[None] | None] | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    loads: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-{self.bucket}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0  # in a row: a watch that loaded starts the count again
        while True:
            loads = self.loads
            try:
                kv = await self.js.key_value(str(self.bucket))
                watcher = await kv.watchall()
                initial: dict[str, bytes] | None = {}
                async for entry in watcher:
                    if entry is None:  # the current entries are all in: from here on, updates
                        if initial is not None and self.on_load is not None:
                            await _maybe_await(self.on_load(initial))
                        initial = None
                        self.loads += 1
                        self.loaded.set()
                        continue
                    deleted = entry.operation in ("DEL", "PURGE")
                    if initial is not None and self.on_load is not None:
                        if deleted:
                            initial.pop(entry.key, None)
                        else:
                            initial[entry.key] = entry.value
                        continue
                    await self._deliver(entry.key, None if deleted else entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failures = 1 if self.loads > loads else failures + 1
                log.warning("kv watch lost; re-creating", bucket=str(self.bucket), error=str(err),
                            retry_in_s=NATS_AWAY.wait(failures))
            else:  # the watcher ended (NATS went away and the consumer with it)
                failures = 1 if self.loads > loads else failures + 1
            await asyncio.sleep(NATS_AWAY.wait(failures))

    async def _deliver(self, key: str, value: bytes | None) -> None:
        """One update to the receiver. One it cannot take (an entry that does not decode) is skipped and counted:
        re-creating the watch for it would only meet it again, and freeze the receiver on it."""
        try:
            await _maybe_await(self.on_change(key, value))
        except (msgspec.DecodeError, ValueError) as err:  # ValidationError is a DecodeError
            metrics.KV_ENTRIES_REFUSED.labels(str(self.bucket)).inc()
            log.warning("kv entry refused", bucket=str(self.bucket), key=key, error=str(err))


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result
