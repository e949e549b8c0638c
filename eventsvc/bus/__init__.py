"""The bus: NATS JetStream behind a small interface. Only this package imports `nats`."""

from eventsvc.bus.client import (
    START_ALL,
    START_NEW,
    Bus,
    ConsumerSpec,
    ConsumerState,
    Delivery,
    KeyValueStore,
    PublishAck,
    PullConsumer,
    StartAt,
    StreamState,
    Subscription,
    connect,
)
from eventsvc.bus.streams import StreamSpec, default_streams

__all__ = [
    "START_ALL",
    "START_NEW",
    "Bus",
    "ConsumerSpec",
    "ConsumerState",
    "Delivery",
    "KeyValueStore",
    "PublishAck",
    "PullConsumer",
    "StartAt",
    "StreamSpec",
    "StreamState",
    "Subscription",
    "connect",
    "default_streams",
]
