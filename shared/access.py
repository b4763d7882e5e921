"""Who may do what on the bus: every service's NATS user and the subjects it may publish and subscribe to, least
privilege, in one table. `authorization_config()` renders it as nats-server configuration (deploy/nats/auth.conf,
which the deployment and `stocktracker up` both load; each user's password comes from the server's environment,
NATS_PASSWORD_<USER>).

A service may publish only what it produces (ingest the market, a tracker its own events, KV keys and checkpoint, every
service its own dead letters), read only the streams it consumes (through the JetStream API for those streams), create
or update the topology's streams and buckets (whichever starts first does it), and answer requests (its nats.micro
endpoints, `allow_responses`). No service may delete or purge a stream, or publish into another's subjects. The
`operator` user (`stocktracker status`, `tap`, `dlq`, `replay`) may do everything.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from shared.subjects import (
    ALERTS,
    BASIS_POINT,
    DEAD_LETTERS,
    DERIVED,
    FOREIGN_FLOW,
    INDEX_POINT,
    MARKET,
    SERVICE_STATUS,
    STREAMS,
    TRADE_CLASSIFIED,
    Bucket,
)

OPERATOR = "operator"


def _kv(bucket: Bucket) -> str:
    return f"KV_{bucket}"


TOPOLOGY = [spec.name for spec in STREAMS] + [_kv(bucket) for bucket in Bucket]


def new_password() -> str:
    """A password nats-server can take from its environment: the server parses a variable's value as a
    configuration token, so it must read as a plain word (a letter, then letters and digits; 192 random bits)."""
    return "p" + secrets.token_hex(24)


def password_variable(user: str) -> str:
    """The nats-server environment variable holding `user`'s password."""
    return f"NATS_PASSWORD_{user.upper()}"


@dataclass(frozen=True)
class Access:
    """One user's rights: the subjects it may publish (beyond the JetStream API it needs) and the streams it reads."""

    user: str
    publishes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()  # streams (KV buckets as KV_<bucket>)
    checkpoint: bool = False  # a tracker: its own key in the checkpoints bucket (KV_checkpoints), partitions too

    def publish_allowed(self) -> list[str]:
        subjects = [*self.publishes, DEAD_LETTERS(self.user), "$JS.API.INFO", "$JS.API.STREAM.INFO.*",
                    *(f"$JS.API.STREAM.{verb}.{name}" for verb in ("CREATE", "UPDATE") for name in TOPOLOGY)]
        reads = [*self.reads, _kv(Bucket.CHECKPOINTS)] if self.checkpoint else list(self.reads)
        for stream in reads:
            subjects += [f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}.>",
                         f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>", f"$JS.API.CONSUMER.INFO.{stream}.>",
                         f"$JS.API.CONSUMER.DELETE.{stream}.>", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
                         f"$JS.API.STREAM.MSG.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}",
                         f"$JS.API.DIRECT.GET.{stream}.>", f"$JS.ACK.{stream}.>", f"$JS.FC.{stream}.>"]
        if self.checkpoint:
            subjects += [f"$KV.{Bucket.CHECKPOINTS}.{self.user}", f"$KV.{Bucket.CHECKPOINTS}.{self.user}.>"]
        return subjects

    def subscribe_allowed(self) -> list[str]:
        # Replies (JetStream API answers, acknowledgements, push consumers' deliveries) come to the client's inboxes;
        # $SRV is nats.micro's discovery (`stocktracker status`, `nats micro ls`), then the service's own endpoint.
        return ["_INBOX.>", "$SRV.>", SERVICE_STATUS.format(name=self.user)]


def _stocks_tracker(user: str, events: str, *buckets: Bucket) -> Access:
    return Access(user, publishes=(events, *(f"$KV.{bucket}.>" for bucket in buckets)),
                  reads=(MARKET.name, _kv(Bucket.REFERENCE)), checkpoint=True)


SERVICES: dict[str, Access] = {access.user: access for access in (
    Access("ingest", publishes=("md.>", f"$KV.{Bucket.REFERENCE}.>"), reads=(_kv(Bucket.REFERENCE),)),
    _stocks_tracker("classifier", TRADE_CLASSIFIED.wildcard, Bucket.SESSION_STATS, Bucket.PRICES),
    _stocks_tracker("foreign", FOREIGN_FLOW.wildcard, Bucket.FOREIGN),
    _stocks_tracker("index", INDEX_POINT.wildcard, Bucket.INDICES),
    Access("derivatives", publishes=(TRADE_CLASSIFIED.wildcard, BASIS_POINT.wildcard, f"$KV.{Bucket.DERIVATIVES}.>"),
           reads=(MARKET.name, _kv(Bucket.REFERENCE)), checkpoint=True),
    Access("board", publishes=(f"$KV.{Bucket.BOARD}.>",), reads=(MARKET.name,), checkpoint=True),
    Access("alerts", publishes=(ALERTS, f"$KV.{Bucket.ALERTS}.>"), reads=(DERIVED.name, _kv(Bucket.ALERT_RULES)),
           checkpoint=True),
    Access("recorder", reads=(DERIVED.name,)),
    Access("gateway", publishes=(f"$KV.{Bucket.ALERT_RULES}.>",),
           reads=(DERIVED.name, *(_kv(bucket) for bucket in Bucket if bucket != Bucket.CHECKPOINTS))),
)}


USERS = [*SERVICES, OPERATOR]


def _quoted(subjects: list[str]) -> str:
    return ", ".join(f'"{subject}"' for subject in subjects)


def authorization_config() -> str:
    """The nats-server `authorization` block: one user per service, and the operator, passwords from the
    environment."""
    lines = ["# Rendered by shared/access.py (tests/test_deploy.py checks this file is its rendering): do not edit.",
             "# Each user's password comes from the server's environment, NATS_PASSWORD_<USER>.",
             "authorization {", "  users = ["]
    for access in SERVICES.values():
        lines += [f"    {{user: {access.user}, password: ${password_variable(access.user)}, permissions: {{",
                  f"      publish: {{allow: [{_quoted(access.publish_allowed())}]}},",
                  f"      subscribe: {{allow: [{_quoted(access.subscribe_allowed())}]}},",
                  "      allow_responses: true}}"]
    lines += [f"    {{user: {OPERATOR}, password: ${password_variable(OPERATOR)}}}", "  ]", "}", ""]
    return "\n".join(lines)
