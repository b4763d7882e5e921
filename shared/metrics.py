"""The metrics every service exposes on /metrics. Services add their own beside these, prefixed `stocktracker_`.

One process runs one service, so the process-wide default registry is the service's registry; Prometheus' job and
instance labels tell the services apart.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

SERVICE_INFO = Info("stocktracker_service", "Which service this process runs")

MESSAGES_IN = Counter(
    "stocktracker_messages_in_total", "Messages received, by subject family", ["family"]
)
MESSAGES_OUT = Counter(
    "stocktracker_messages_out_total", "Messages published, by subject family", ["family"]
)
MESSAGES_REJECTED = Counter(
    "stocktracker_messages_rejected_total", "Messages refused, by reason", ["reason"]
)
HANDLER_SAMPLE_EVERY = 16
HANDLER_SECONDS = Histogram(
    "stocktracker_handler_seconds",
    "Time spent handling one message, by subject family (sampled: one message in 16)",
    ["family"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)

GC_PAUSE_SECONDS = Histogram(
    "stocktracker_gc_pause_seconds",
    "Time the garbage collector held the process up, by generation (2: a full collection)",
    ["generation"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)

NATS_EVENTS = Counter(
    "stocktracker_nats_events_total", "NATS connection events: disconnected, reconnected, error", ["event"]
)
NATS_CONNECTED = Gauge("stocktracker_nats_connected", "1 while connected to NATS")

PUBLISH_PENDING = Gauge("stocktracker_publish_pending", "JetStream publishes sent but not yet acknowledged")
PUBLISH_RESENDS = Counter(
    "stocktracker_publish_resends_total", "JetStream publishes sent again after a timeout or reconnect"
)
PUBLISH_DUPLICATES = Counter(
    "stocktracker_publish_duplicates_total", "Publishes JetStream dropped as duplicates of an earlier message id"
)
PUBLISH_ERRORS = Counter(
    "stocktracker_publish_errors_total", "Publishes JetStream refused for good (e.g. too large), by code", ["code"]
)
KV_ENTRIES_REFUSED = Counter(
    "stocktracker_kv_entries_refused_total", "KV entries a watcher skipped because they do not decode, by bucket",
    ["bucket"]
)
PUBLISH_SECONDS = Histogram(
    "stocktracker_publish_seconds",
    "Time from publish to JetStream acknowledgement (sampled: one message in 16)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)


def family_of(subject: str) -> str:
    """The subject without its instrument (md.trade.ACB -> md.trade, md.futures.quote.VN30F2612 -> md.futures.quote;
    md.rejected stays whole): bounded label values."""
    family, _, _ = subject.rpartition(".")
    return family if "." in family else subject
