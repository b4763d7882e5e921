"""`stocktracker config` shows every setting and refuses a bad one, as `up` does (which is tested end to end in
test_stack); `stocktracker dlq` lists the dead letters on a real nats-server, newest last, by service."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats.js.errors
import pytest

from shared import config
from shared.messages.domain import DeadLetter
from shared.runtime import EXIT_CONFIG
from shared.subjects import DEAD_LETTERS, DEADLETTER

pytestmark = pytest.mark.integration


def test_config_prints_every_setting() -> None:
    result = subprocess.run([sys.executable, "-m", "launcher.cli", "config"], capture_output=True, text=True,
                            env={**os.environ, "METRICS_PORT": "9999"}, check=True)
    names = [line.split("=", 1)[0] for line in result.stdout.splitlines()]
    assert names == list(config.documented_settings())
    assert "METRICS_PORT=9999" in result.stdout


def test_config_rejects_a_bad_value_in_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "launcher.cli", "config"], capture_output=True, text=True,
                            env={**os.environ, "LOG_LEVEL": "chatty"})
    assert result.returncode == 2
    assert result.stderr.strip() == "stocktracker config: invalid LOG_LEVEL='chatty': Invalid enum value 'chatty'"


def test_up_refuses_a_bad_value_of_its_own_with_the_configuration_exit(tmp_path: Any) -> None:
    result = subprocess.run([sys.executable, "-m", "launcher.cli", "up", "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, env={**os.environ, "LOG_LEVEL": "chatty"}, timeout=30)
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.strip() == "stocktracker up: invalid LOG_LEVEL='chatty': Invalid enum value 'chatty'"
    assert result.stdout == ""


def letter(service: str, sequence: int, payload: str = '{"symbol": "ACB", "volume": "many"}') -> DeadLetter:
    return DeadLetter(service=service, stream="MARKET", subject="md.trade.ACB", sequence=sequence, reason="invalid",
                      error="ValidationError: Expected `int`, got `str` - at `$.volume`\nsecond line",
                      payload=payload, payload_bytes=len(payload.encode()),
                      dead_lettered_at=datetime(2026, 1, 5, 2, 15, 30, tzinfo=UTC))


async def dlq(nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "launcher.cli", "dlq", *args],
                                   capture_output=True, text=True, env={**os.environ, "NATS_URL": nats_url},
                                   timeout=30)


async def test_dlq_lists_the_newest_dead_letters_by_service(nc: Any, nats_url: str) -> None:
    js = nc.jetstream()
    empty = await dlq(nats_url)
    assert empty.returncode == 0
    assert empty.stdout == ""
    assert "holds no dead letters" in empty.stderr

    for sequence in range(1, 31):  # classifier 1..30, the recorder every tenth of them as well
        await js.publish(DEAD_LETTERS("classifier"), msgspec.json.encode(letter("classifier", sequence)))
        if sequence % 10 == 0:
            await js.publish(DEAD_LETTERS("recorder"), msgspec.json.encode(letter("recorder", sequence)))

    listed = await dlq(nats_url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 * 20  # the default limit, two lines each
    heads = lines[::2]
    assert heads[-1] == ("2026-01-05 09:15:30+07:00  recorder  MARKET #30  md.trade.ACB  "
                         "invalid: ValidationError: Expected `int`, got `str` - at `$.volume`")
    assert heads[-2].split("  ")[1:3] == ["classifier", "MARKET #30"]
    assert heads[0].split("  ")[1:3] == ["classifier", "MARKET #13"]  # the newest 20 of 33, oldest first
    assert lines[1] == '    {"symbol": "ACB", "volume": "many"}  (35 bytes)'
    assert "the newest 20 of 33 dead letters" in listed.stderr

    recorder = await dlq(nats_url, "--service", "recorder", "--limit", "2")
    assert [line.split("  ")[1:3] for line in recorder.stdout.splitlines()[::2]] == [
        ["recorder", "MARKET #20"], ["recorder", "MARKET #30"]]
    assert "the newest 2 of 3 dead letters from recorder" in recorder.stderr

    raw = await dlq(nats_url, "--service", "recorder", "--json")
    assert [msgspec.json.decode(line, type=DeadLetter) for line in raw.stdout.splitlines()] == [
        letter("recorder", sequence) for sequence in (10, 20, 30)]

    nobody = await dlq(nats_url, "--service", "gateway")
    assert nobody.returncode == 0
    assert nobody.stdout == ""
    assert "holds no dead letters from gateway" in nobody.stderr


async def test_dlq_shows_the_start_of_a_payload_on_one_line_and_what_is_not_a_dead_letter(nc: Any,
                                                                                         nats_url: str) -> None:
    js = nc.jetstream()
    long = json.dumps({"symbol": "ACB", "note": "line\nbreak", "pad": "x" * 500})
    await js.publish(DEAD_LETTERS("index"), msgspec.json.encode(letter("index", 7, payload=long)))
    await js.publish(DEAD_LETTERS("index"), b"not json")
    listed = await dlq(nats_url, "--service", "index")
    lines = listed.stdout.splitlines()
    assert lines[1].startswith('    {"symbol": "ACB", "note": "line\\nbreak", "pad": "xxx')
    assert lines[1].endswith(f"...  ({len(long)} bytes)")
    assert len(lines[1]) < 160
    assert lines[2].startswith("DEADLETTER #2 is not a dead letter (")
    assert lines[2].endswith("): not json")


async def test_dlq_says_when_there_is_no_dead_letter_stream(nc: Any, nats_url: str) -> None:
    await nc.jetstream().delete_stream(DEADLETTER.name)
    try:
        missing = await dlq(nats_url)
    finally:
        await nc.jetstream().add_stream(name=DEADLETTER.name, subjects=list(DEADLETTER.subjects))
    assert missing.returncode == 1
    assert missing.stderr.strip() == (f"stocktracker dlq: no DEADLETTER stream at {nats_url}: "
                                      "no service has started there yet")
    with pytest.raises(nats.js.errors.NotFoundError):
        await nc.jetstream().stream_info("NO_SUCH_STREAM")
