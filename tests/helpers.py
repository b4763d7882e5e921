"""Paths and small helpers shared by the tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil

DATA = Path(__file__).resolve().parent / "data"
REPLAY_DAY = DATA / "replay-day.jsonl"  # a recorded HOSE day full of real-feed edge cases (see data/README.md)
REPLAY_DAY_EXPECTED = DATA / "replay-day.expected.json"  # its exact expected results
DAY_ALERTS = 22  # the alerts the rules raise on the recorded day with the default settings


def expected_day() -> dict[str, Any]:
    return json.loads(REPLAY_DAY_EXPECTED.read_text())


def recorded_messages(path: Path) -> Iterator[Any]:
    """Every domain message of a recorded feed file, in file order (rejected frames skipped)."""
    from shared.messages.ssi import Decoded, decode_frame

    with path.open("rb") as lines:
        for line in lines:
            result = decode_frame(line)
            if isinstance(result, Decoded):
                yield from result.messages


def stock_feed(path: Path) -> Iterator[Any]:
    """A recorded file's stock quotes and trades in file order: what the classifier reads (ingest puts futures on
    subjects of their own)."""
    from shared.market import is_futures
    from shared.messages.domain import Quote, Trade

    for message in recorded_messages(path):
        if isinstance(message, Quote | Trade) and not is_futures(message.symbol, message.exchange):
            yield message


def classify_recorded(path: Path) -> Any:
    """The pure classifier core fed a recorded file's stock quotes and trades, uninterrupted: the reference result."""
    from shared.aggressor import Classifier
    from shared.messages.domain import Quote

    core = Classifier()
    for message in stock_feed(path):
        if isinstance(message, Quote):
            core.on_quote(message)
        else:
            core.on_trade(message)
    return core


def track_recorded(path: Path) -> tuple[Any, Any, Any, list[Any]]:
    """The foreign, index and derivatives cores fed a recorded file in order, each futures trade once (as the
    stream's deduplication delivers it): (foreign, indices, derivatives, every basis point released)."""
    from services.derivatives.core import DerivativesCore
    from services.foreign.core import ForeignCore
    from services.index.core import IndexCore
    from shared.market import is_futures
    from shared.messages.domain import ForeignRoom, IndexUpdate, Quote, Trade

    foreign, indices, derivatives = ForeignCore(), IndexCore(), DerivativesCore()
    points: list[Any] = []
    seen: set[str] = set()
    for message in recorded_messages(path):
        if isinstance(message, ForeignRoom):
            foreign.on_room(message)
        elif isinstance(message, IndexUpdate):
            indices.on_update(message)
            points += derivatives.on_index(message)[1]
        elif isinstance(message, Quote) and is_futures(message.symbol, message.exchange):
            derivatives.on_quote(message)
        elif (isinstance(message, Trade) and is_futures(message.symbol, message.exchange)
              and message.natural_key() not in seen):
            seen.add(message.natural_key())
            _, released = derivatives.on_trade(message)
            points += [released] if released else []
    return foreign, indices, derivatives, points + derivatives.held_points()


def frame(data_type: str, content: dict[str, Any] | str, *, encode_content: bool = True) -> bytes:
    """One SSI Broadcast payload as the client hands it over: Content double-encoded unless told otherwise."""
    body = json.dumps(content) if encode_content and not isinstance(content, str) else content
    return json.dumps({"DataType": data_type, "Content": body}).encode()


async def run_in_process(actor: Any, settings: Any) -> tuple[Any, Any]:
    """Serve `actor` in this event loop, as its process would; returns (task, stop event). Set the event to stop it."""
    import asyncio

    from shared.runtime import serve

    stop = asyncio.Event()
    task = asyncio.create_task(serve(actor, settings, stop))
    return task, stop


def caught_up(tracker: Any) -> bool:
    """The tracker has read its stream to the end and JetStream has stored everything it published: what it raised
    is in the stream to be read (`processed` alone runs ahead of publishes not yet acknowledged)."""
    return (bool(tracker.processed) and tracker.pending == 0 and tracker.ctx is not None
            and tracker.ctx.publisher.pending == 0)


def running(pids: Iterable[int]) -> list[int]:
    """The pids still running (a zombie, or a process that exits while we look, is not)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


async def eventually(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> None:
    """Wait until `predicate()` (sync or async) is true; fail the test after `timeout` seconds."""
    import asyncio
    import inspect

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def kv_entries(js: Any, bucket: str) -> dict[str, bytes]:
    """Every live entry of a KV bucket. Read from the bucket's stream rather than with `kv.keys()`, which nats-py
    can end early with a spurious NoKeysError (nats.py #842)."""
    import nats.js.errors

    info = await js.stream_info(f"KV_{bucket}", subjects_filter=">")
    kv = await js.key_value(bucket)
    entries = {}
    for subject in info.state.subjects or {}:
        key = subject.removeprefix(f"$KV.{bucket}.")
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            continue  # deleted
        if entry.value is not None:
            entries[key] = entry.value
    return entries


async def dead_letters(nc: Any, service: str) -> dict[int, Any]:
    """A service's dead letters on DEADLETTER, by the sequence (in their stream) of the message they stand for."""
    import msgspec

    from shared.messages.domain import DeadLetter
    from shared.subjects import DEAD_LETTERS, DEADLETTER

    js = nc.jetstream()
    state = (await js.stream_info(DEADLETTER.name)).state
    letters = {}
    for sequence in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        stored = await js.get_msg(DEADLETTER.name, sequence)
        if stored.subject == DEAD_LETTERS(service):
            letter = msgspec.json.decode(stored.data, type=DeadLetter)
            letters[letter.sequence] = letter
    return letters
