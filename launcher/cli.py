"""`stocktracker`: run the whole system here (`up`), look inside it (`status`, `tap`, `dlq`), feed it a file
(`replay`), keep what the feed sends (`record`), and show the configuration (`config`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import deque
from pathlib import Path
from typing import Any

import msgspec

from shared import config

DESCRIPTION = __doc__


def _settings(command: str) -> config.Settings | None:
    try:
        return config.load()
    except config.ConfigError as err:
        print(config.redact(f"stocktracker {command}: {err}"), file=sys.stderr)
        return None


def _nats_settings(settings: config.Settings, state_dir: Path | None) -> config.Settings:
    """NATS_URL when set, else the server a running `up` started (remembered in its state dir)."""
    from launcher.stack import remembered_nats_url

    if "NATS_URL" in os.environ:
        return settings
    remembered = remembered_nats_url(state_dir or Path(settings.state_dir))
    return msgspec.structs.replace(settings, nats_url=remembered.split(",")) if remembered else settings


# --- up ----------------------------------------------------------------------------------------------------------


def up(args: argparse.Namespace) -> int:
    """Exits EXIT_CONFIG whenever configuration stops it, its own or a service's (so its supervisor need not retry)."""
    from launcher.local import CLUSTER_NODES
    from launcher.stack import Stack, UpOptions
    from shared.runtime import EXIT_CONFIG

    settings = _settings("up")
    if settings is None:
        return EXIT_CONFIG
    options = UpOptions(state_dir=args.state_dir or Path(settings.state_dir), source=args.source,
                        replay_file=args.replay_file, speed=args.speed, cluster=args.cluster == CLUSTER_NODES,
                        scale=dict(args.scale or []))
    if options.replay_file is not None and not options.replay_file.is_file():
        print(f"stocktracker up: no such file {options.replay_file}", file=sys.stderr)
        return EXIT_CONFIG
    return Stack(settings, options).run()


# --- status ------------------------------------------------------------------------------------------------------


async def _gather(nc: Any, subject: str, wait_s: float) -> list[dict[str, Any]]:
    """Every answer to a `$SRV` request within `wait_s` (one per running service instance)."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        answers.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish(subject, b"", reply=inbox)
    await asyncio.sleep(wait_s)
    await sub.unsubscribe()
    return answers


async def _status(settings: config.Settings) -> int:
    from shared import bus
    from shared.subjects import STREAMS

    nc = await bus.connect(msgspec.structs.replace(settings, nats_connect_timeout_s=3), "stocktracker-status")
    try:
        stats = await _gather(nc, "$SRV.STATS", 0.5)
        infos = {info["id"]: info for info in await _gather(nc, "$SRV.INFO", 0.3)}
        print(f"NATS {nc.connected_url.geturl() if nc.connected_url else ''}")
        for spec in STREAMS:
            info = await nc.jetstream().stream_info(spec.name)
            print(f"  stream {spec.name:<8} {info.state.messages:>10,} messages  last seq {info.state.last_seq:,}")
        print("Services:")
        if not stats:
            print("  none answered")
        for stat in sorted(stats, key=lambda s: s["name"]):
            data = next((endpoint.get("data") for endpoint in stat.get("endpoints", []) if endpoint.get("data")), {})
            metrics_port = infos.get(stat["id"], {}).get("metadata", {}).get("metrics_port", "?")
            print(f"  {stat['name']:<12} up since {stat.get('started', '?')[:19]}  metrics :{metrics_port}  "
                  f"{_summary(data)}")
    finally:
        await nc.close()
    return 0


def _summary(data: dict[str, Any]) -> str:
    """The figures a status line shows: lag, throughput, errors."""
    keys = ("pending", "processed", "frames_read", "frames_rejected", "messages_published", "classified", "flows",
            "recorded", "clients", "ready")
    parts = [f"{key}={data[key]}" for key in keys if key in data]
    for table, figures in data.items():
        if isinstance(figures, dict) and "recorded" in figures:
            parts.append(f"{table}: recorded={figures['recorded']} pending={figures['pending']}")
    return "  ".join(parts)


def status(args: argparse.Namespace) -> int:
    from shared.bus import BusError

    settings = _settings("status")
    if settings is None:
        return 2
    try:
        return asyncio.run(_status(_nats_settings(settings, args.state_dir)))
    except BusError as err:
        print(config.redact(f"stocktracker status: {err}"), file=sys.stderr)
        return 1


# --- tap ---------------------------------------------------------------------------------------------------------


async def _tap(settings: config.Settings, subject: str, count: int | None) -> int:
    from shared import bus

    nc = await bus.connect(msgspec.structs.replace(settings, nats_connect_timeout_s=3), "stocktracker-tap")
    done = asyncio.Event()
    seen = 0

    async def show(msg: Any) -> None:
        nonlocal seen
        try:
            body = json.dumps(json.loads(msg.data), ensure_ascii=False)
        except ValueError:
            body = msg.data.decode(errors="replace")
        print(f"{msg.subject} {body}", flush=True)
        seen += 1
        if count is not None and seen >= count:
            done.set()

    await nc.subscribe(subject, cb=show)
    print(f"tapping {subject} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        await done.wait()
    finally:
        await nc.close()
    return 0


def tap(args: argparse.Namespace) -> int:
    from shared.bus import BusError

    settings = _settings("tap")
    if settings is None:
        return 2
    try:
        return asyncio.run(_tap(_nats_settings(settings, args.state_dir), args.subject, args.count))
    except KeyboardInterrupt:
        return 0
    except BusError as err:
        print(config.redact(f"stocktracker tap: {err}"), file=sys.stderr)
        return 1


# --- dlq ---------------------------------------------------------------------------------------------------------

DLQ_PAYLOAD_SHOWN = 120  # characters of a dead letter's payload in the listing


async def _newest(js: Any, stream: str, subject: str, limit: int) -> tuple[list[Any], int]:
    """The newest `limit` messages of `stream` on `subject`, oldest first, and how many it holds on `subject`.
    Only about as many are read as are returned: when there are more, a window back from the stream's end is doubled
    until it holds `limit` of them (a consumer's pending count says so without reading any), then read forward."""
    from nats.js.errors import NotFoundError

    info = await js.stream_info(stream, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    first, last = info.state.first_seq, info.state.last_seq
    start = first
    if total > limit:
        window = limit
        start = max(first, last - window + 1)
        while start > first and await _pending_from(js, stream, subject, start) < limit:
            window *= 2
            start = max(first, last - window + 1)
    newest: deque[Any] = deque(maxlen=limit)
    sequence = start
    while sequence <= last:
        try:
            message = await js.get_msg(stream, seq=sequence, subject=subject, next=True)
        except NotFoundError:  # none after `sequence`
            break
        if message.seq > last:  # arrived while we read
            break
        newest.append(message)
        sequence = message.seq + 1
    return list(newest), total


async def _pending_from(js: Any, stream: str, subject: str, start: int) -> int:
    """How many messages of `stream` on `subject` there are from sequence `start` on."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    consumer = await js.add_consumer(stream, ConsumerConfig(
        filter_subject=subject, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
        ack_policy=AckPolicy.NONE, mem_storage=True, inactive_threshold=10.0))
    await js.delete_consumer(stream, consumer.name)
    return consumer.num_pending


def _printable(text: str) -> str:
    """`text` on one line: control characters escaped."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _dead_letter_lines(sequence: int, data: bytes) -> str:
    from shared.market import to_exchange_time
    from shared.messages.domain import DeadLetter
    from shared.subjects import DEADLETTER

    try:
        letter = msgspec.json.decode(data, type=DeadLetter)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        text = data.decode(errors="replace")
        return f"{DEADLETTER.name} #{sequence} is not a dead letter ({err}): {_printable(text[:DLQ_PAYLOAD_SHOWN])}"
    at = to_exchange_time(letter.dead_lettered_at).isoformat(sep=" ", timespec="seconds")
    error = letter.error.splitlines()[0] if letter.error else ""
    shown = _printable(letter.payload[:DLQ_PAYLOAD_SHOWN])
    more = "..." if len(letter.payload) > DLQ_PAYLOAD_SHOWN else ""
    return (f"{at}  {letter.service}  {letter.stream} #{letter.sequence}  {letter.subject}  {letter.reason}: {error}\n"
            f"    {shown}{more}  ({letter.payload_bytes:,} bytes)")


async def _dlq(settings: config.Settings, service: str | None, limit: int, raw: bool) -> int:
    from nats.js.errors import NotFoundError

    from shared import bus
    from shared.subjects import DEAD_LETTERS, DEADLETTER

    subject = DEAD_LETTERS(service) if service else DEAD_LETTERS.wildcard
    nc = await bus.connect(msgspec.structs.replace(settings, nats_connect_timeout_s=3), "stocktracker-dlq")
    where = nc.connected_url.geturl() if nc.connected_url else ""
    try:
        letters, total = await _newest(nc.jetstream(), DEADLETTER.name, subject, limit)
    except NotFoundError:
        print(f"stocktracker dlq: no {DEADLETTER.name} stream at {where}: no service has started there yet",
              file=sys.stderr)
        return 1
    finally:
        await nc.close()
    whose = f" from {service}" if service else ""
    if not letters:
        print(f"{DEADLETTER.name} at {where} holds no dead letters{whose}", file=sys.stderr)
        return 0
    print(f"{DEADLETTER.name} at {where}: the newest {len(letters)} of {total:,} dead letters{whose}, newest last",
          file=sys.stderr)
    for message in letters:
        print(message.data.decode(errors="replace") if raw else _dead_letter_lines(message.seq, message.data))
    return 0


def _instances(text: str) -> tuple[str, int]:
    from launcher.catalog import SERVICES

    name, _, count = text.partition("=")
    if name not in {spec.name for spec in SERVICES} or not count.isdigit() or not 1 <= int(count) <= 16:
        raise argparse.ArgumentTypeError(f"{text!r} is not SERVICE=N, a service's name and 1 to 16 instances")
    return name, int(count)


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def dlq(args: argparse.Namespace) -> int:
    from shared.bus import BusError

    settings = _settings("dlq")
    if settings is None:
        return 2
    try:
        return asyncio.run(_dlq(_nats_settings(settings, args.state_dir), args.service, args.limit, args.json))
    except BusError as err:
        print(config.redact(f"stocktracker dlq: {err}"), file=sys.stderr)
        return 1


# --- replay and record ---------------------------------------------------------------------------------------------


async def _replay(settings: config.Settings) -> int:
    from services.ingest.service import Ingest
    from shared.runtime import serve

    actor = Ingest()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(actor, settings, stop))
    while not task.done():
        source = actor.status()["source"]
        if source and source.get("finished"):
            stop.set()
        await asyncio.sleep(0.1)
    code = task.result()
    print(f"replayed {actor.frames_read:,} frames: {actor.frames_published:,} published, "
          f"{actor.frames_rejected:,} rejected {actor.rejections or ''}", file=sys.stderr)
    return code


def replay(args: argparse.Namespace) -> int:
    from shared.runtime import configure_logging

    settings = _settings("replay")
    if settings is None:
        return 2
    if not args.file.is_file():
        print(f"stocktracker replay: no such file {args.file}", file=sys.stderr)
        return 2
    settings = msgspec.structs.replace(_nats_settings(settings, args.state_dir), ingest_source="replay",
                                       replay_file=str(args.file), replay_speed=args.speed, metrics_port=0)
    configure_logging("replay", settings.log_level, "console")
    return asyncio.run(_replay(settings))


def record(args: argparse.Namespace) -> int:
    """Run ingest from the configured source, also writing every frame to FILE (Ctrl-C stops)."""
    from services.ingest.service import Ingest
    from shared.runtime import configure_logging, serve

    settings = _settings("record")
    if settings is None:
        return 2
    settings = msgspec.structs.replace(_nats_settings(settings, args.state_dir), record_file=str(args.file),
                                       metrics_port=0)
    try:
        Ingest.check(settings)
    except config.ConfigError as err:
        print(config.redact(f"stocktracker record: {err}"), file=sys.stderr)
        return 2
    configure_logging("record", settings.log_level, "console")
    return asyncio.run(serve(Ingest(), settings))


# --- config ------------------------------------------------------------------------------------------------------


def show_config(_: argparse.Namespace) -> int:
    settings = _settings("config")
    if settings is None:
        return 2
    for name, (description, _default) in config.documented_settings().items():
        print(f"{name}={config.shown(name.lower(), getattr(settings, name.lower()))}    # {description}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stocktracker", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    state_help = "the `up` state dir, to find its NATS when NATS_URL is unset (default: STATE_DIR)"

    run = commands.add_parser("up", help="run NATS, PostgreSQL and every service on this machine")
    run.add_argument("--state-dir", type=Path, help="where data and logs live (default: STATE_DIR)")
    run.add_argument("--source", choices=["sim", "replay", "ssi"], help="the feed (default: INGEST_SOURCE)")
    run.add_argument("--replay-file", type=Path, help="a recorded feed to replay (implies --source replay)")
    run.add_argument("--speed", type=float, help="SIM_SPEED / REPLAY_SPEED: 1 real time, N faster, 0 flat out")
    run.add_argument("--cluster", type=int, choices=[3], help="a NATS cluster of 3 nodes of its own, streams and "
                                                              "buckets replicated 3 times (default: one server)")
    run.add_argument("--scale", action="append", type=_instances, metavar="SERVICE=N",
                     help="run N instances of a service: classifier (PARTITION i/N), gateway (ports GATEWAY_PORT+i), "
                          "ingest or recorder (side by side); the others run one")
    run.set_defaults(handler=up)

    look = commands.add_parser("status", help="the running services, their lag and throughput, the streams")
    look.add_argument("--state-dir", type=Path, help=state_help)
    look.set_defaults(handler=status)

    listen = commands.add_parser("tap", help="print the messages on a subject, decoded (e.g. 'md.trade.ACB')")
    listen.add_argument("subject")
    listen.add_argument("--count", type=int, help="stop after this many")
    listen.add_argument("--state-dir", type=Path, help=state_help)
    listen.set_defaults(handler=tap)

    dead = commands.add_parser("dlq", help="the dead letters: stream messages a service could not use, and why")
    dead.add_argument("--service", help="only those this service set aside (subject dlq.<SERVICE>)")
    dead.add_argument("--limit", type=_at_least_one, default=20, help="the newest this many (default 20)")
    dead.add_argument("--json", action="store_true", help="the dead letters as stored, one JSON object a line")
    dead.add_argument("--state-dir", type=Path, help=state_help)
    dead.set_defaults(handler=dlq)

    feed = commands.add_parser("replay", help="publish a recorded feed file into the running system, then exit")
    feed.add_argument("file", type=Path)
    feed.add_argument("--speed", type=float, default=0.0, help="1 real time, N times faster, 0 flat out (default)")
    feed.add_argument("--state-dir", type=Path, help=state_help)
    feed.set_defaults(handler=replay)

    keep = commands.add_parser("record", help="run ingest from INGEST_SOURCE, also writing every frame to FILE")
    keep.add_argument("file", type=Path)
    keep.add_argument("--state-dir", type=Path, help=state_help)
    keep.set_defaults(handler=record)

    commands.add_parser("config", help="print every setting with its current value").set_defaults(handler=show_config)
    args = parser.parse_args(argv)
    sys.exit(args.handler(args))


if __name__ == "__main__":
    main()
