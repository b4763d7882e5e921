"""Paths and small helpers shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
REPLAY_DAY = DATA / "replay-day.jsonl"  # a recorded HOSE day full of real-feed edge cases (see data/README.md)
REPLAY_DAY_EXPECTED = DATA / "replay-day.expected.json"  # its exact expected results


def expected_day() -> dict[str, Any]:
    return json.loads(REPLAY_DAY_EXPECTED.read_text())


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
