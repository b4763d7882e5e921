"""The JetStream topology: every stream and KV bucket, created or brought to the current settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue

from shared.config import Settings
from shared.retry import LEADER_ELECTION, STORE_BEING_REMOVED, retrying
from shared.subjects import BUCKET_DESCRIPTIONS, STREAMS, Bucket, StreamSpec

T = TypeVar("T")


def stream_config(spec: StreamSpec, settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
        max_age=settings.stream_max_age_days * 86400,
        duplicate_window=settings.dedup_window_s,
        max_msg_size=1024 * 1024,
    )


async def ensure_topology(js: JetStreamContext, settings: Settings) -> None:
    """Create every stream and KV bucket, or bring an existing one to the current settings. Idempotent, so every
    service runs it at start and whichever starts first creates them."""
    for spec in STREAMS:
        config = stream_config(spec, settings)
        await _retrying_server_errors(lambda c=config: _add_or_update(js, c))
    for bucket in Bucket:
        await _retrying_server_errors(lambda b=bucket: ensure_bucket(js, b, settings))
    for name in [spec.name for spec in STREAMS] + [f"KV_{bucket}" for bucket in Bucket]:
        await _until_led(js, name)


class _NoLeaderYet(Exception):
    pass


async def _until_led(js: JetStreamContext, stream: str) -> None:
    """Return once `stream` has a leader. On a cluster, a service that finds a stream already created may find it
    before its leader is elected (another service's creation still in progress): what it publishes then would be
    refused (503), so it waits, as for any election."""

    async def led() -> None:
        info = await js.stream_info(stream)
        if info.cluster is not None and not info.cluster.leader:
            raise _NoLeaderYet(stream)

    await retrying(led, LEADER_ELECTION, retry_on=(*LEADERLESS, nats.js.errors.NotFoundError, _NoLeaderYet),
                   deadline_s=ELECTION_S)


async def _add_or_update(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)


# What a JetStream API request meets while the stream or bucket it asks has no leader: a cluster just formed (its
# assets elect theirs), a node lost or restarted.
LEADERLESS = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)
ELECTION_S = 30.0  # an election takes seconds; a request still failing after this is not waiting for one


async def electing(request: Callable[[], Awaitable[T]]) -> T:
    """`request()`, tried again (LEADER_ELECTION) while its stream or bucket has no leader, for up to ELECTION_S."""
    return await retrying(request, LEADER_ELECTION, retry_on=LEADERLESS, deadline_s=ELECTION_S)


async def _retrying_server_errors(create: Callable[[], Awaitable[Any]]) -> Any:
    """A stream created right after one of the same name was deleted can fail while the server still removes the
    old store ("error creating store for stream"): a transient server error, worth a few more tries."""
    return await retrying(create, STORE_BEING_REMOVED, retry_on=(nats.js.errors.ServerError,), attempts=10)


async def ensure_bucket(js: JetStreamContext, bucket: Bucket, settings: Settings) -> KeyValue:
    try:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=str(bucket),
                description=BUCKET_DESCRIPTIONS[bucket],
                history=1,
                replicas=settings.stream_replicas,
                storage=StorageType.FILE,
            )
        )
    except nats.js.errors.BadRequestError:
        return await js.key_value(str(bucket))
