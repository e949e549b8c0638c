"""Trigger kinds, keyed by their YAML key under `template`."""

from __future__ import annotations

from eventsvc.triggers import http, log, nats, promotion
from eventsvc.triggers.base import Services, TriggerContext, TriggerKind, TriggerResult

REGISTRY: dict[str, type[TriggerKind]] = {
    log.LogTrigger.key: log.LogTrigger,
    http.HttpTrigger.key: http.HttpTrigger,
    nats.NatsTrigger.key: nats.NatsTrigger,
    promotion.PromotionTrigger.key: promotion.PromotionTrigger,
}

__all__ = ["REGISTRY", "Services", "TriggerContext", "TriggerKind", "TriggerResult"]
