"""The bus: NATS JetStream behind a small interface. Only this package imports `nats`."""

from eventsvc.bus.client import Bus, Delivery, KeyValueStore, PublishAck, PullConsumer, connect
from eventsvc.bus.streams import StreamSpec, default_streams

__all__ = [
    "Bus",
    "Delivery",
    "KeyValueStore",
    "PublishAck",
    "PullConsumer",
    "StreamSpec",
    "connect",
    "default_streams",
]
