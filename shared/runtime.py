"""The actor shell every service runs in.

A service is an `Actor`: `start` subscribes (intake begins), `stop` stops intake and finishes in-flight work.
`run` does everything around it: settings, JSON logs bound with the service name, the Prometheus /metrics endpoint,
the NATS connection (version-checked) and topology, a reliable publisher, `nats.micro` registration (so
`nats micro ls` lists every running service and `$SRV.PING` reaches it), and graceful shutdown on SIGTERM/SIGINT:
stop intake, finish in-flight work, flush unacknowledged publishes, drain the connection, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Concatenate, ParamSpec

import msgspec
import structlog
from aiohttp import web
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, EndpointStats, Service, ServiceConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import bus, config, metrics
from shared.deadletter import DeadLetters
from shared.subjects import SERVICE_STATUS

VERSION = "0.1.0"
P = ParamSpec("P")
# CPython collects its youngest generation every 700 net allocations of container objects; a service handling tens
# of thousands of messages a second makes garbage that refcounting frees at once, and the little left in cycles is
# collected ten times less often at no measurable cost in memory (bench/pipeline.py --channel x: peak RSS the same).
GC_YOUNG_THRESHOLD = 7_000


@dataclass
class Context:
    """What an actor gets to work with."""

    name: str
    settings: config.Settings
    nc: Client
    js: JetStreamContext
    publisher: bus.Publisher
    log: Any  # structlog BoundLogger
    dead_letters: DeadLetters
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    failure: str | None = None

    def fail(self, reason: str) -> None:
        """Shut the service down with a non-zero exit: for errors the actor cannot recover from."""
        self.failure = reason
        self.stop_requested.set()

    def instrumented(self, handler: Callable[Concatenate[str, P], Awaitable[None]]
                     ) -> Callable[Concatenate[str, P], Awaitable[None]]:
        """`handler` (called with a subject first) counted: messages in and handling time, by subject family. A
        handler that raises is a bug, not bad input (bad input is dead-lettered or rejected, and counted, by the
        handler itself): the service stops with a non-zero exit rather than go on with a message silently lost, and
        its supervisor restarts it from its checkpoint."""

        counters: dict[str, Any] = {}
        timers: dict[str, Any] = {}
        handled = 0

        async def handle(subject: str, *args: P.args, **kwargs: P.kwargs) -> None:
            nonlocal handled
            counter = counters.get(subject)
            if counter is None:  # labels() costs more than most handlers: once per subject
                family = metrics.family_of(subject)
                counter = counters[subject] = metrics.MESSAGES_IN.labels(family)
                timers[subject] = metrics.HANDLER_SECONDS.labels(family)
            counter.inc()
            handled += 1
            timed = handled % metrics.HANDLER_SAMPLE_EVERY == 0
            started = time.perf_counter() if timed else 0.0
            try:
                await handler(subject, *args, **kwargs)
            except Exception as err:
                self.log.exception("handler failed", subject=subject)
                self.fail(f"handler failed on {subject}: {err!r}")
            if timed:
                timers[subject].observe(time.perf_counter() - started)

        return handle


class Actor(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    metrics_port: ClassVar[int] = 0  # the service's own /metrics port (METRICS_PORT overrides it); 0: any free one

    @staticmethod  # noqa: B027 - most actors need no cross-setting checks
    def check(settings: config.Settings) -> None:
        """Validate settings that only make sense together; raise `config.ConfigError` naming the variable."""

    @abstractmethod
    async def start(self, ctx: Context) -> None:
        """Begin work: subscribe, start tasks. Return once intake is running."""

    async def stop(self) -> None:  # noqa: B027 - an actor without in-flight work has nothing to stop
        """Stop intake and finish in-flight work; publishes are flushed after this returns."""

    def status(self) -> dict[str, Any]:
        """A small JSON-able summary, served by the micro `status` endpoint and in `$SRV.STATS` data."""
        return {}

    def ready(self) -> bool:
        """Whether the service does its job yet (served as /healthz readiness)."""
        return True


# --- logging -----------------------------------------------------------------------------------------------------


def _redact_secrets(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """No secret in a log line: every text value (the message, a URL, a traceback) with secrets masked."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = config.redact(value)
    return event


def configure_logging(name: str, level: str = "info", fmt: str = "json") -> None:
    """structlog for our code and the standard library's logging (nats-py, aiohttp) alike: one line per event,
    JSON by default, every line carrying the service name."""
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=lambda obj, **_: msgspec.json.encode(obj).decode())
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared_processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared_processors,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=name)


# --- metrics and health endpoint ---------------------------------------------------------------------------------


async def start_metrics_server(actor: Actor, host: str, port: int) -> tuple[web.AppRunner, int]:
    async def serve_metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def serve_health(_: web.Request) -> web.Response:
        ready = actor.ready()
        return web.json_response({"live": True, "ready": ready}, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/healthz", serve_health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound


# --- micro registration --------------------------------------------------------------------------------------------


async def register_micro(nc: Client, actor: Actor, metrics_port: int) -> Service:
    def stats_data(_: EndpointStats) -> dict[str, Any]:
        return actor.status()

    service = await add_service(
        nc,
        ServiceConfig(
            name=actor.name,
            version=VERSION,
            description=actor.description,
            metadata={"metrics_port": str(metrics_port)},
            stats_handler=stats_data,
        ),
    )

    async def answer_status(request: Request) -> None:
        await request.respond(msgspec.json.encode({"service": actor.name, "ready": actor.ready(), **actor.status()}))

    await service.add_endpoint(
        EndpointConfig(name="status", subject=SERVICE_STATUS.format(name=actor.name), handler=answer_status)
    )
    return service


# --- the shell -----------------------------------------------------------------------------------------------------


# How a service ends, for its supervisor (`stocktracker up`, systemd, Kubernetes): a restart may mend the first two,
# never the third, which `up` does not restart (systemd: RestartPreventExitStatus=78).
EXIT_FAILED = 1  # the service ran and failed
EXIT_CANNOT_START = 2  # the metrics port taken, NATS unreachable: both may change by the next try
EXIT_CONFIG = 78  # EX_CONFIG of sysexits.h: a bad setting, a NATS server the system cannot use, credentials refused


def fatal_line(name: str, message: str) -> str:
    """The one line a service stops with on stderr (its supervisor finds it in the service's log)."""
    return config.redact(f"stocktracker {name}: {message}")


def _fatal(name: str, message: str, code: int = EXIT_CANNOT_START) -> int:
    """One clear line on stderr, for errors that stop a service; returns the exit code."""
    print(fatal_line(name, message), file=sys.stderr, flush=True)
    return code


async def serve(actor: Actor, settings: config.Settings, stop: asyncio.Event | None = None, *,
                own_process: bool = False) -> int:
    """Run `actor` until SIGTERM/SIGINT (or `stop` is set); returns the process exit code. `own_process`: the
    process is the service's alone (`main`), so its garbage collector is the service's to tune."""
    name = actor.name
    log = structlog.get_logger(name)
    metrics.SERVICE_INFO.info({"name": name, "version": VERSION})
    port = settings.metrics_port if settings.metrics_port is not None else actor.metrics_port
    try:
        runner, port = await start_metrics_server(actor, settings.metrics_host, port)
    except OSError as err:
        return _fatal(name, f"cannot serve /metrics on {settings.metrics_host}:{port}: {err.strerror or err}")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            nc = await bus.connect(settings, name)
        except bus.BusError as err:
            log.error("cannot start", error=str(err))
            return _fatal(name, str(err), EXIT_CANNOT_START if err.restartable else EXIT_CONFIG)
        js = nc.jetstream()
        await bus.ensure_topology(js, settings)
        publisher = bus.Publisher(nc)
        await publisher.start()
        micro = await register_micro(nc, actor, port)
        ctx = Context(name=name, settings=settings, nc=nc, js=js, publisher=publisher, log=log,
                      dead_letters=DeadLetters(name, publisher, log), stop_requested=stop)
        try:
            await actor.start(ctx)
        except config.ConfigError as err:  # found only once the actor asks (e.g. SSI refusing the credentials)
            log.error("cannot start", error=str(err))
            await _shutdown(actor, publisher, micro, nc, log)
            return _fatal(name, f"cannot start: {err}", EXIT_CONFIG)
        except Exception as err:
            log.exception("cannot start")
            await _shutdown(actor, publisher, micro, nc, log)
            return _fatal(name, f"cannot start: {err}", EXIT_FAILED)
        if own_process:
            settle_garbage_collector()
        log.info("started", metrics_port=port, nats=nc.connected_url.geturl() if nc.connected_url else None)
        await stop.wait()
        if ctx.failure:
            log.error("failed", reason=ctx.failure)
        else:
            log.info("stopping")
        await _shutdown(actor, publisher, micro, nc, log)
        return _fatal(name, ctx.failure, EXIT_FAILED) if ctx.failure else 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def settle_garbage_collector() -> None:
    """Once a service has started: what it loaded (modules, classes, its restored state: tens of thousands of
    objects that live as long as the process) is moved out of the collector's sight: a full collection walks only
    what the day has added since. Before, each service's first full collections during a session took 50-100 ms,
    holding up every message behind them. Young collections run less often (GC_YOUNG_THRESHOLD). The pauses are
    observed in stocktracker_gc_pause_seconds, from the one collecting the garbage of starting up on."""
    if _observe_collection not in gc.callbacks:
        gc.callbacks.append(_observe_collection)
    gc.collect()  # the garbage of starting up, so none of it is kept for good by the freeze
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


_PAUSES = [metrics.GC_PAUSE_SECONDS.labels(str(generation)) for generation in range(3)]
_collection_started = 0.0


def _observe_collection(phase: str, info: dict[str, int]) -> None:
    global _collection_started
    if phase == "start":
        _collection_started = time.perf_counter()
    else:
        _PAUSES[info["generation"]].observe(time.perf_counter() - _collection_started)


SHUTDOWN_STEP_S = 10.0  # each step of a shutdown gets this long: a service told to stop stops, NATS or not


async def _shutdown(actor: Actor, publisher: bus.Publisher, micro: Service, nc: Client, log: Any) -> None:
    try:
        await asyncio.wait_for(actor.stop(), 3 * SHUTDOWN_STEP_S)
    except TimeoutError:
        log.warning("in-flight work not finished in time")
    flushed = await publisher.stop(timeout=SHUTDOWN_STEP_S)
    if not flushed:
        log.warning("stopped with unacknowledged publishes", pending=publisher.pending)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(micro.stop(), SHUTDOWN_STEP_S)
    try:
        await asyncio.wait_for(nc.drain(), SHUTDOWN_STEP_S)
    except Exception:  # NATS unreachable: nothing left to drain to
        with contextlib.suppress(Exception):
            await nc.close()
    log.info("stopped")


def checked_settings(actor_type: type[Actor], environ: Mapping[str, str] | None = None) -> config.Settings:
    """The settings a service starts with, checked as it checks them (`stocktracker up` asks every service before
    it starts anything); raises `config.ConfigError`."""
    settings = config.load(environ)
    actor_type.check(settings)
    return settings


def main(actor_type: type[Actor]) -> None:
    """Entry point of `python -m services.<name>`: settings, logging, then `serve` until told to stop."""
    try:
        settings = checked_settings(actor_type)
    except config.ConfigError as err:
        sys.exit(_fatal(actor_type.name, str(err), EXIT_CONFIG))
    configure_logging(actor_type.name, settings.log_level, settings.log_format)
    sys.exit(asyncio.run(serve(actor_type(), settings, own_process=True)))
