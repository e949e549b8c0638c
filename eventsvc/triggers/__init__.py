"""Trigger kinds, keyed by their YAML key under `template`."""

from __future__ import annotations

from eventsvc.triggers import argo_workflow, environment, http, k8s, log, nats
from eventsvc.triggers.base import Services, TriggerContext, TriggerKind, TriggerResult
from eventsvc.triggers.github_comment import GitHubCommentTrigger
from eventsvc.triggers.github_status import GitHubStatusTrigger
from eventsvc.triggers.promotion import PromotionTrigger

REGISTRY: dict[str, type[TriggerKind]] = {
    log.LogTrigger.key: log.LogTrigger,
    http.HttpTrigger.key: http.HttpTrigger,
    nats.NatsTrigger.key: nats.NatsTrigger,
    k8s.K8sTrigger.key: k8s.K8sTrigger,
    argo_workflow.ArgoWorkflowTrigger.key: argo_workflow.ArgoWorkflowTrigger,
    environment.EnvironmentTrigger.key: environment.EnvironmentTrigger,
    PromotionTrigger.key: PromotionTrigger,
    GitHubStatusTrigger.key: GitHubStatusTrigger,
    GitHubCommentTrigger.key: GitHubCommentTrigger,
}

__all__ = ["REGISTRY", "Services", "TriggerContext", "TriggerKind", "TriggerResult"]
