"""`POST /webhooks/github`: signed GitHub webhooks in, binary-mode CloudEvents out.

The event is stored in JetStream before we answer 202; a redelivery of the same
delivery id is recognised by JetStream (`Nats-Msg-Id` = hook id:delivery id)
and answered 200 without a second copy.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from eventsvc import events, logs, metrics, subjects
from eventsvc.config import Config
from eventsvc.errors import ConfigError
from eventsvc.gateways.common import (
    MAX_HEADER_BYTES,
    BodyBudget,
    BusRef,
    Rejection,
    accepted_response,
    check_attributes,
    check_subject,
    guarded,
    header_block_too_large,
    header_text,
    json_response,
    parse_json,
    publish,
    read_body,
)

log = logs.get("eventsvc.gateways.github")
GATEWAY = "github"
SIGNATURE_HEADER = "X-Hub-Signature-256"


def verify_signature(body: bytes, header: str | None, secrets: Sequence[bytes]) -> None:
    """Raise a 401 `Rejection` unless `header` is a valid sha256 HMAC of `body` by a secret."""
    if not header:
        raise Rejection(401, "signature_missing",
                        f"missing {SIGNATURE_HEADER}; set the webhook secret in GitHub's "
                        "webhook settings to the one eventsvc is configured with")  # fmt: skip
    algo, _, digest = header.partition("=")
    if algo != "sha256" or not digest or not digest.isascii():
        raise Rejection(401, "signature_malformed",
                        f"{SIGNATURE_HEADER} must look like 'sha256=<hex>'")  # fmt: skip
    ok = False
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
        # compare against every secret: no early exit that would time the match
        ok |= hmac.compare_digest(expected, digest)
    if not ok:
        raise Rejection(401, "signature_invalid",
                        f"{SIGNATURE_HEADER} does not match the body with any configured "
                        "secret; check that GitHub and eventsvc share the same secret")  # fmt: skip


def event_type(event: str, payload: Mapping[str, Any]) -> str:
    action = payload.get("action")
    return f"com.github.{event}.{action}" if isinstance(action, str) and action else (
        f"com.github.{event}"
    )


def event_source(payload: Mapping[str, Any]) -> str:
    repo = payload.get("repository")
    if isinstance(repo, Mapping) and repo.get("html_url"):
        return str(repo["html_url"])
    org = payload.get("organization")
    if isinstance(org, Mapping) and org.get("login"):
        return f"https://github.com/{org['login']}"
    sender = payload.get("sender")
    if isinstance(sender, Mapping) and sender.get("html_url"):
        return str(sender["html_url"])
    return "https://github.com"


def event_subject(event: str, payload: Mapping[str, Any]) -> str | None:
    """PR or issue number, ref, or tag: what the event is about, where there is one."""
    for key in ("pull_request", "issue"):
        item = payload.get(key)
        if isinstance(item, Mapping) and item.get("number") is not None:
            return str(item["number"]) or None
    release = payload.get("release")
    if isinstance(release, Mapping) and release.get("tag_name"):
        return str(release["tag_name"])
    if isinstance(payload.get("ref"), str):
        return str(payload["ref"]) or None  # an empty attribute is no attribute
    for key in ("workflow_run", "check_suite", "check_run"):
        item = payload.get(key)
        if isinstance(item, Mapping) and item.get("head_sha"):
            return str(item["head_sha"])
    return None


def _payload_bytes(body: bytes, content_type: str) -> bytes:
    if content_type == "application/x-www-form-urlencoded":
        form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        values = form.get("payload")
        if not values:
            raise Rejection(400, "malformed_body",
                            "form-encoded body has no 'payload' field")  # fmt: skip
        return values[0].encode()
    if content_type not in ("application/json", ""):
        raise Rejection(415, "unsupported_media_type",
                        f"Content-Type {content_type!r} is not one GitHub sends; "
                        "use application/json or application/x-www-form-urlencoded")  # fmt: skip
    return body


class GitHubGateway:
    def __init__(
        self, config: Config, bus_ref: BusRef, budget: BodyBudget | None = None
    ) -> None:
        if not config.github_webhook_secrets and not config.github_insecure_no_signature:
            raise ConfigError(
                "no GitHub webhook secret: set EVENTSVC_GITHUB_WEBHOOK_SECRET (comma-separated "
                "for rotation) or EVENTSVC_GITHUB_WEBHOOK_SECRET_FILE; to accept unsigned "
                "webhooks on a trusted network only, pass --insecure-no-signature"
            )
        if not config.github_webhook_secrets:
            log.warning("github webhook signatures are NOT checked (--insecure-no-signature)")
        self.secrets = [s.encode() for s in config.github_webhook_secrets]
        self.allowed = frozenset(config.github_allowed_events)
        self.limit = config.max_body_bytes
        self.budget = budget or BodyBudget(config.max_inflight_bytes)
        self.bus_ref = bus_ref
        self._subjects: dict[str, str] = {}
        # bound once: the module-level lazy proxy rebinds on every call (it is not cached)
        self._log = log.bind()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/webhooks/github", guarded(GATEWAY, self.handle))]

    async def handle(self, request: web.Request) -> web.Response:
        metrics.received(GATEWAY).inc()
        body = await read_body(request, self.limit, self.budget)
        if self.secrets:
            verify_signature(body, request.headers.get(SIGNATURE_HEADER), self.secrets)
        headers = request.headers
        event = header_text("X-GitHub-Event", headers.get("X-GitHub-Event"))
        if not event:
            raise Rejection(400, "missing_event_header",
                            "missing X-GitHub-Event header; is this a GitHub webhook?")  # fmt: skip
        delivery = header_text("X-GitHub-Delivery", headers.get("X-GitHub-Delivery"))
        if not delivery:
            raise Rejection(400, "missing_delivery_header", "missing X-GitHub-Delivery header")
        content_type = request.headers.get("Content-Type")
        if content_type != "application/json":  # what GitHub sends; anything else is parsed
            content_type = request.content_type
        raw = _payload_bytes(body, content_type)
        payload = parse_json(raw, "body")
        if not isinstance(payload, dict):
            raise Rejection(400, "malformed_json", "body must be a JSON object")
        if event == "ping":
            return json_response(200, {"status": "pong", "zen": payload.get("zen")})
        if self.allowed and event not in self.allowed:
            metrics.EVENTS_REJECTED.labels(GATEWAY, "event_not_allowed").inc()
            log.debug("event not in allow-list", github_event=event, event_id=delivery)
            reason = f"event {event!r} is not in the allow-list"
            return json_response(200, {"status": "ignored", "reason": reason})
        return await self._publish(request, event, delivery, payload, raw)

    async def _publish(
        self,
        request: web.Request,
        event: str,
        delivery: str,
        payload: Mapping[str, Any],
        raw: bytes,
    ) -> web.Response:
        hook_id = header_text("X-GitHub-Hook-ID", request.headers.get("X-GitHub-Hook-ID")) or "0"
        ce_type = event_type(event, payload)
        source = event_source(payload)
        subject_attr = event_subject(event, payload)
        # every value below is percent-encoded to printable ASCII (binary_headers); the body is
        # the JSON parsed above: what a consumer reads back is what is checked here, so no
        # decode of the message is needed, only the attributes and the sizes
        check_attributes({"id": delivery, "source": source, "type": ce_type,
                          "subject": subject_attr, "githubhookid": hook_id})  # fmt: skip
        headers = events.binary_headers({
            "specversion": "1.0", "id": delivery, "source": source, "type": ce_type,
            "time": events.format_now(), "datacontenttype": "application/json",
            "subject": subject_attr, "githubdelivery": delivery, "githubhookid": hook_id,
            "githubevent": event,
        })  # fmt: skip
        subject = self._subjects.get(event) or self._subject(event)
        msg_id = f"{hook_id}:{delivery}"
        size = 27 + len(msg_id.encode()) + sum(len(k) + len(v) + 4 for k, v in headers.items())
        if size > MAX_HEADER_BYTES:  # the NATS header block, as `claims.header_bytes` counts
            raise header_block_too_large(size)
        ack = await publish(self.bus_ref.bus, GATEWAY, subject, headers, raw, msg_id=msg_id)
        if ack.duplicate:
            self._log.info("duplicate delivery, already stored", event_id=delivery, seq=ack.seq)
            return json_response(200, {"status": "duplicate", "id": delivery,
                                       "detail": "this delivery was already accepted"})  # fmt: skip
        self._log.debug("event accepted", event_id=delivery, type=ce_type, seq=ack.seq)
        return accepted_response(delivery)

    def _subject(self, event: str) -> str:
        subject = subjects.github(event)
        check_subject(subject)
        if len(self._subjects) < 1000:  # GitHub has a few dozen event names; bounded anyway
            self._subjects[event] = subject
        return subject
