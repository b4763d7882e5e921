"""Every setting, read from environment variables, typed and validated once at start.

A setting is a field of `Settings`; its environment variable is the field name in upper case. The field's
`Meta(description=...)` is its documentation (the README's configuration table is checked against it).
List-valued settings are comma-separated. A bad value raises `ConfigError` with one line naming the variable.

Secrets: a setting whose `Meta` says `extra={"secret": True}` is never shown (`shown()` prints it as `****`), and a
URL's password never is either, whatever the setting. Every value of a secret setting loaded is remembered, so
`redact()` (which the log processor and every printed line go through) masks it wherever it appears.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec
import msgspec.inspect
from msgspec import Meta

NatsUrl = Annotated[str, Meta(pattern=r"^(nats|tls|ws|wss)://[^\s,]+$")]
Port = Annotated[int, Meta(ge=0, le=65535)]
PositiveInt = Annotated[int, Meta(gt=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
HttpUrl = Annotated[str, Meta(pattern=r"^https?://\S+/$")]  # the SSI client joins paths by concatenation: end with /
SECRET: dict[str, Any] = {"secret": True}  # Meta(extra=SECRET): a setting never printed nor logged
MASK = "****"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    nats_url: Annotated[
        list[NatsUrl],
        Meta(description="NATS server URL(s), comma-separated. `stocktracker up` starts its own server when unset."),
    ] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    nats_user: Annotated[
        str, Meta(description="This service's NATS user (deploy/nats/auth.conf); `stocktracker up` sets it for its own "
                              "servers.")
    ] = ""
    nats_password: Annotated[str, Meta(description="That user's NATS password.", extra=SECRET)] = ""
    nats_tls_ca: Annotated[
        str, Meta(description="CA bundle (PEM) the NATS servers' certificates are verified against; set with tls:// "
                              "URLs (deploy/make-certs.sh makes a local one). Unset: the system's CAs.")
    ] = ""
    nats_connect_timeout_s: Annotated[
        PositiveFloat, Meta(description="How long a service keeps trying to reach NATS at start before it gives up.")
    ] = 30.0
    database_url: Annotated[
        str,
        Meta(
            pattern=r"^(postgres|postgresql)://\S*$|^$",
            description="PostgreSQL DSN (recorder, gateway history). `stocktracker up` starts its own when unset.",
        ),
    ] = ""
    metrics_port: Annotated[
        Port | None,
        Meta(description="Port of the service's Prometheus /metrics endpoint; unset: the service's default; 0: any."),
    ] = None
    metrics_host: Annotated[str, Meta(description="Address the /metrics endpoint listens on.")] = "127.0.0.1"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], Meta(description="Lowest log level written.")
    ] = "info"
    log_format: Annotated[
        Literal["json", "console"], Meta(description="`json` (one JSON object per line) or `console` (for humans).")
    ] = "json"
    stream_replicas: Annotated[
        Annotated[int, Meta(ge=1, le=5)],
        Meta(description="Replicas of every stream and KV bucket: 1 on one server, 3 in a NATS cluster."),
    ] = 1
    stream_max_age_days: Annotated[
        PositiveFloat, Meta(description="How many days the MARKET and DERIVED streams keep messages (replay buffer).")
    ] = 7.0
    dedup_window_s: Annotated[
        PositiveFloat,
        Meta(description="JetStream duplicate window: a message sent again with the same key within it is dropped."),
    ] = 7200.0
    # --- ingest -----------------------------------------------------------------------------------------------------
    ingest_source: Annotated[
        Literal["sim", "replay", "ssi"],
        Meta(description="Where ingest reads the market: `sim` (the simulator), `replay` (REPLAY_FILE), `ssi` (live)."),
    ] = "sim"
    record_file: Annotated[
        str, Meta(description="When set, ingest also writes every frame it reads to this JSON Lines file (replayable).")
    ] = ""
    ssi_consumer_id: Annotated[str, Meta(description="SSI FastConnect Data consumer id (INGEST_SOURCE=ssi).")] = ""
    ssi_consumer_secret: Annotated[
        str, Meta(description="SSI FastConnect Data secret (INGEST_SOURCE=ssi).", extra=SECRET)
    ] = ""
    ssi_url: Annotated[
        HttpUrl, Meta(description="SSI FastConnect Data REST base URL (token, reference data, reconciliation).")
    ] = "https://fc-data.ssi.com.vn/"
    ssi_stream_url: Annotated[
        HttpUrl, Meta(description="SSI streaming hub base URL: a different host from the REST one.")
    ] = "https://fc-datahub.ssi.com.vn/"
    ssi_channels: Annotated[
        list[Annotated[str, Meta(pattern=r"^[A-Za-z-]+:[A-Za-z0-9_-]+$")]],
        Meta(description="SSI channels, comma-separated, one per channel type; each gets its own stream and watchdog."),
    ] = msgspec.field(default_factory=lambda: ["X:ALL", "R:ALL", "MI:ALL", "B:ALL", "F:ALL"])
    ssi_watchdog_s: Annotated[
        PositiveFloat,
        Meta(description="A channel silent this long (keep-alives included) while the market is open is reconnected."),
    ] = 30.0
    vn30_symbols: Annotated[
        list[Annotated[str, Meta(pattern=r"^[A-Z0-9]{1,20}$")]],
        Meta(description="The VN30 basket, comma-separated; unset: from SSI's IndexComponents, else a built-in list."),
    ] = msgspec.field(default_factory=list)
    sim_seed: Annotated[int, Meta(description="Simulator seed: the same seed gives the same market.")] = 1
    sim_speed: Annotated[
        Annotated[float, Meta(ge=0)],
        Meta(description="Simulator pace: 1 = the wall clock (trades only in market hours), N = a day from 08:45 N "
                         "times faster, 0 = as fast as possible."),
    ] = 100.0
    sim_intensity: Annotated[PositiveFloat, Meta(description="Simulator trading activity (1 = a realistic day).")] = 1.0
    sim_universe: Annotated[
        Literal["default", "market"],
        Meta(description="Simulated instruments: `default` (real names: VN30 and a few more on HOSE, some HNX and "
                         "UPCOM stocks, two VN30F contracts) or `market` (the whole market, about 1,550)."),
    ] = "default"
    sim_channel: Annotated[
        Literal["split", "x"],
        Meta(description="Simulated trades and books: `split` (X-TRADE and X-QUOTE frames) or `x` (one combined X "
                         "frame each, as SSI's X:ALL channel sends them)."),
    ] = "split"
    sim_date: Annotated[
        str, Meta(pattern=r"^(\d{4}-\d{2}-\d{2})?$", description="First simulated trading date (YYYY-MM-DD); unset: "
                                                                 "today in exchange time.")
    ] = ""
    replay_file: Annotated[
        str, Meta(description="Recorded feed for INGEST_SOURCE=replay: JSON Lines of SSI Broadcast payloads, .gz too.")
    ] = ""
    replay_speed: Annotated[
        Annotated[float, Meta(ge=0)],
        Meta(description="Replay pace by the frames' exchange times: 1 = real time, N = N times faster, 0 = flat out."),
    ] = 1.0
    replay_rate: Annotated[
        Annotated[float, Meta(ge=0)],
        Meta(description="Replay at a steady N frames/s instead, whatever the frames' exchange times (a load test: "
                         "a live feed spreads a second's frames over it, a replay by exchange time sends them at "
                         "once); 0 = by REPLAY_SPEED."),
    ] = 0.0
    # --- trackers ---------------------------------------------------------------------------------------------------
    classifier_kv_interval_ms: Annotated[
        Annotated[int, Meta(ge=0)],
        Meta(description="The classifier writes a symbol's stats and price to KV at most once per this many ms."),
    ] = 100
    checkpoint_interval_s: Annotated[
        PositiveFloat, Meta(description="How often a tracker saves its state and stream position for restarts.")
    ] = 1.0
    partition: Annotated[
        str,
        Meta(pattern=r"^\d+/[1-9]\d*$",
             description="This tracker instance's share of the symbols, `i/n`: those whose hash mod n is i."),
    ] = "0/1"
    alert_spike_factor: Annotated[
        PositiveFloat, Meta(description="Alert volume_spike: a trade above this many times the symbol's mean trade.")
    ] = 5.0
    alert_spike_minutes: Annotated[
        PositiveInt, Meta(description="Alert volume_spike: the mean trade of this many minutes (feed time).")
    ] = 15
    alert_spike_min_trades: Annotated[
        PositiveInt, Meta(description="Alert volume_spike: trades in the window before its mean counts.")
    ] = 20
    alert_foreign_pct: Annotated[
        PositiveFloat, Meta(description="Alert foreign_acceleration: the foreign net value changing by this many "
                                        "percent of its size within the window.")
    ] = 50.0
    alert_foreign_minutes: Annotated[
        PositiveInt, Meta(description="Alert foreign_acceleration: the window, minutes.")
    ] = 10
    alert_foreign_min_value: Annotated[
        PositiveFloat, Meta(description="Alert foreign_acceleration: the least change that counts, VND.")
    ] = 5e9
    alert_basis_points: Annotated[
        PositiveFloat, Meta(description="Alert basis_move: a contract's basis moving this many index points within "
                                        "the window.")
    ] = 3.0
    alert_basis_minutes: Annotated[PositiveInt, Meta(description="Alert basis_move: the window, minutes.")] = 5
    alert_flow_ratio: Annotated[
        PositiveFloat, Meta(description="Alert futures_flow: a contract's active buy / sell volume (or sell / buy) "
                                        "over the window beyond this ratio.")
    ] = 2.5
    alert_flow_minutes: Annotated[
        PositiveInt, Meta(description="Alerts futures_flow and futures_absorption: the window, minutes.")
    ] = 5
    alert_flow_min_volume: Annotated[
        PositiveInt, Meta(description="Alerts futures_flow and futures_absorption: the least volume in the window, "
                                      "contracts.")
    ] = 2_000
    alert_absorption_factor: Annotated[
        PositiveFloat, Meta(description="Alert futures_absorption: active buying of the window's second half over "
                                        "its first half.")
    ] = 2.0
    alert_absorption_flat_points: Annotated[
        PositiveFloat, Meta(description="Alert futures_absorption: the price's range over the window at most, "
                                        "index points.")
    ] = 0.5
    alert_dedup_minutes: Annotated[
        Annotated[int, Meta(ge=0)], Meta(description="Alerts: a rule raises once per symbol within this many minutes.")
    ] = 5
    alert_webhook_url: Annotated[
        str, Meta(pattern=r"^(https?://\S+)?$", extra=SECRET,
                  description="Alerts: POST each alert here as JSON (empty: no webhook). https://, or http:// to "
                              "a loopback address; a secret, as such URLs carry their token.")
    ] = ""
    alert_webhook_secret: Annotated[
        str, Meta(extra=SECRET, description="Alerts: when set, each webhook POST is signed: header "
                                            "X-StockTracker-Signature: sha256=<HMAC-SHA256 of the body, hex>.")
    ] = ""
    alert_webhook_timeout_s: Annotated[
        PositiveFloat, Meta(description="Alerts: a webhook POST not answered within this many seconds is retried.")
    ] = 10.0
    foreign_speed_window_s: Annotated[
        PositiveFloat, Meta(description="Foreign buy/sell speed: volume per minute over this many exchange seconds.")
    ] = 300.0
    futures_aliases: Annotated[
        list[Annotated[str, Meta(pattern=r"^[A-Z0-9_-]+=VN30F\d{4}$")]],
        Meta(description="Other futures codes as VN30F contracts, comma-separated `CODE=VN30FYYMM` (post-KRX codes)."),
    ] = msgspec.field(default_factory=list)
    # --- recorder ---------------------------------------------------------------------------------------------------
    recorder_batch: Annotated[
        PositiveInt, Meta(description="The recorder writes at most this many messages per batch (one transaction).")
    ] = 5000
    recorder_flush_ms: Annotated[
        PositiveInt, Meta(description="...or whatever arrived within this many ms, whichever comes first.")
    ] = 250
    recorder_retention_days: Annotated[
        Annotated[int, Meta(ge=0)],
        Meta(description="Drop history partitions older than this many trading-date days; 0 keeps everything."),
    ] = 0
    # --- gateway ----------------------------------------------------------------------------------------------------
    gateway_host: Annotated[str, Meta(description="Address the gateway (REST, WebSocket, dashboard) listens on.")] = (
        "127.0.0.1"
    )
    gateway_port: Annotated[Port, Meta(description="The gateway's HTTP port.")] = 8080
    gateway_token: Annotated[
        str,
        Meta(description="When set, WebSocket clients must present it (Authorization: Bearer, or ?token=).",
             extra=SECRET),
    ] = ""
    gateway_token_rest: Annotated[
        bool, Meta(description="With GATEWAY_TOKEN set, require it on the REST API too.")
    ] = False
    gateway_cors_origins: Annotated[
        list[str],
        Meta(description="Other origins allowed to call the REST API and open WebSockets from a browser, "
                         "comma-separated (e.g. https://board.example.com); * for any."),
    ] = msgspec.field(default_factory=list)
    gateway_allowed_hosts: Annotated[
        list[str],
        Meta(description="Host names the gateway answers to (the Host header, without port), comma-separated; * for "
                         "any. Others get 421: a DNS-rebinding page cannot reach a gateway on loopback."),
    ] = msgspec.field(default_factory=lambda: ["localhost", "127.0.0.1", "::1"])
    history_max_queries: Annotated[
        PositiveInt, Meta(description="History queries a gateway runs at once; more wait for a slot (then 503).")
    ] = 4
    history_statement_timeout_s: Annotated[
        PositiveFloat, Meta(description="A history query running longer than this is cancelled (503).")
    ] = 10.0
    history_write_timeout_s: Annotated[
        PositiveFloat,
        Meta(description="A history answer not taken by its client within this many seconds is cut off."),
    ] = 30.0
    ws_throttle_ms: Annotated[
        Annotated[int, Meta(ge=10)], Meta(description="A WebSocket channel broadcasts at most once per this many ms.")
    ] = 500
    ws_phases: Annotated[
        Annotated[int, Meta(ge=1, le=20)],
        Meta(description="The filtered channels' sockets are served in this many groups, in turn over each throttle "
                         "interval: smaller bursts, a shorter wait for the last socket of a turn."),
    ] = 4
    ws_max_connections_per_ip: Annotated[
        PositiveInt, Meta(description="Open WebSocket connections allowed per client address.")
    ] = 10
    ws_max_connections: Annotated[
        PositiveInt, Meta(description="Open WebSocket connections allowed in all (503 beyond).")
    ] = 5000
    ws_refusals_per_minute: Annotated[
        PositiveInt,
        Meta(description="Refused WebSocket handshakes (token, Origin, limits) an address may make in a minute "
                         "before it is refused at once (429)."),
    ] = 30
    gateway_trusted_proxies: Annotated[
        list[str],
        Meta(description="Proxies (addresses or networks, comma-separated) whose Forwarded / X-Forwarded-For "
                         "name the client; unset: the peer is the client."),
    ] = msgspec.field(default_factory=list)
    ws_queue_size: Annotated[
        PositiveInt, Meta(description="Messages queued per WebSocket client before it is resynced with a snapshot.")
    ] = 32
    ws_send_timeout_s: Annotated[
        PositiveFloat,
        Meta(description="A WebSocket client that cannot take what is queued for it within this long is disconnected."),
    ] = 10.0
    ws_heartbeat_s: Annotated[
        PositiveFloat, Meta(description="WebSocket ping interval; a peer that misses the pong is dropped.")
    ] = 20.0
    state_dir: Annotated[
        str, Meta(description="Where `stocktracker up` keeps its NATS store, PostgreSQL data and process state.")
    ] = ".stocktracker"

    @property
    def futures_codes(self) -> dict[str, str]:
        """FUTURES_ALIASES as {the feed's code: its VN30FYYMM contract}."""
        return dict(alias.split("=", 1) for alias in self.futures_aliases)


class ConfigError(ValueError):
    """A setting has a bad value; the message is one line that names the environment variable."""


def env_name(field: str) -> str:
    return field.upper()


def _is_list(annotation: Any) -> bool:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return get_origin(annotation) is list


_ERROR_PATH = re.compile(r"at `\$\.(\w+)(?:\[\d+\])?`")


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from the environment; unset or empty variables keep their defaults."""
    environ = os.environ if environ is None else environ
    hints = msgspec.structs.fields(Settings)
    raw: dict[str, Any] = {}
    for field in hints:
        value = environ.get(env_name(field.name))
        if value is None or value.strip() == "":
            continue
        value = value.strip()
        raw[field.name] = [item.strip() for item in value.split(",") if item.strip()] if _is_list(field.type) else value
    for field in hints:  # remembered before validation: a bad value of a secret is still a secret
        if field.name in raw and is_secret(field.name):
            _remember(raw[field.name])
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as err:
        message = redact(str(err))
        match = _ERROR_PATH.search(message)
        if match is None:
            raise ConfigError(f"invalid configuration: {message}") from None
        name = env_name(match.group(1))
        reason = _ERROR_PATH.sub("", message).rstrip(" -")
        raise ConfigError(f"invalid {name}={shown(match.group(1), environ.get(name, ''))!r}: {reason}") from None
    for url in [*settings.nats_url, settings.database_url]:
        _remember(_url_password(url))
    return settings


# --- secrets -----------------------------------------------------------------------------------------------------

_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
_DSN_PASSWORD = re.compile(r"(?P<key>\bpassword=)(?P<password>[^&\s]+)", re.IGNORECASE)
_SHORTEST_REMEMBERED = 4  # a secret this short would mask ordinary words: URLs' and settings' masking covers it
_secrets: set[str] = set()


def _url_password(url: str) -> str:
    match = _URL_CREDENTIALS.search(url) or _DSN_PASSWORD.search(url)
    return match["password"] if match else ""


def _remember(value: Any) -> None:
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and len(item) >= _SHORTEST_REMEMBERED:
            _secrets.add(item)


def is_secret(field: str) -> bool:
    return field in _SECRET_FIELDS


def redact(text: str) -> str:
    """`text` with every URL's password (also a DSN's `password=`) and every secret setting's value masked."""
    text = _URL_CREDENTIALS.sub(lambda match: f"{match['scheme']}{match['user']}:{MASK}@", text)
    text = _DSN_PASSWORD.sub(lambda match: f"{match['key']}{MASK}", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def shown(field: str, value: Any) -> str:
    """A setting's value as it may be printed: a secret as MASK when set, anything else with its URLs redacted."""
    text = ",".join(value) if isinstance(value, list) else str(value)
    if is_secret(field):
        return MASK if text else ""
    return redact(text)


_FIELD_SCHEMAS: dict[str, dict[str, Any]] = msgspec.json.schema(Settings)["$defs"]["Settings"]["properties"]
_SECRET_FIELDS = frozenset(
    field.name for field in msgspec.inspect.type_info(Settings).fields  # type: ignore[attr-defined]
    if isinstance(field.type, msgspec.inspect.Metadata) and (field.type.extra or {}).get("secret"))


def documented_settings() -> dict[str, tuple[str, Any]]:
    """Environment variable -> (description, default), for the README and `stocktracker config`."""
    defaults = Settings()
    return {
        env_name(field.name): (_FIELD_SCHEMAS[field.name].get("description", ""), getattr(defaults, field.name))
        for field in msgspec.structs.fields(Settings)
    }
