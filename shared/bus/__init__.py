"""NATS as the services use it, one module per job: `connection` (connecting with production settings, the server
check), `topology` (streams and buckets), `publisher` (ordered, reliable JetStream publishing), `reader` (a stream
in order from a position), `kv` (a bucket watched into a receiver) and `protocol` (nats-py's client and parser,
leaner where a service spends its time). The package's names are its interface: `from shared import bus;
bus.connect(...)`."""

from shared.bus.connection import MIN_NATS_VERSION, BusError, check_server_version, connect, version_tuple
from shared.bus.kv import BucketWatch
from shared.bus.protocol import MSG_ID
from shared.bus.publisher import Publisher
from shared.bus.reader import (
    MAX_REMEMBERED_SUBJECTS,
    Delivery,
    StreamHandler,
    StreamReader,
    consume_from,
    covering_filter,
    delivery,
    first_sequence_since,
    subject_matcher,
)
from shared.bus.topology import electing, ensure_bucket, ensure_topology, stream_config

__all__ = [
    "MAX_REMEMBERED_SUBJECTS", "MIN_NATS_VERSION", "MSG_ID", "BucketWatch", "BusError", "Delivery", "Publisher",
    "StreamHandler", "StreamReader", "check_server_version", "connect", "consume_from", "covering_filter", "delivery",
    "electing", "ensure_bucket", "ensure_topology", "first_sequence_since", "stream_config", "subject_matcher",
    "version_tuple",
]
