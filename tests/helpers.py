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
