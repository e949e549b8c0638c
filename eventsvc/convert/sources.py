"""Argo Events EventSources: where their events arrive in eventsvc, and how to set that up.

Argo gives every event the CloudEvents context `type` = the event source type,
`source` = the EventSource name and `subject` = the event name. `github` and
`calendar` become eventsvc's own gateways (GitHub webhook, `kind: Schedule`);
`webhook` and `nats` events keep Argo's context, so the sensors' context filters
still mean what they meant:

- webhook: POST /events with `ce-type: webhook`, `ce-source: <EventSource>`,
  `ce-subject: <event>`: subject `events.http.webhook`;
- nats: publish the CloudEvent (`type: nats`, same source/subject) on
  `events.nats.<EventSource>.<event>`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eventsvc import subjects, yamldoc
from eventsvc.convert.celmap import Ref
from eventsvc.convert.report import NotConvertible, OutPath, Output

SUPPORTED = ("github", "calendar", "webhook", "nats")
_GITHUB_HEADERS = {"x-github-event": "githubevent", "x-github-delivery": "githubdelivery",
                   "x-github-hook-id": "githubhookid"}  # fmt: skip
_HEADERS = {"content-type": "datacontenttype"}
_IGNORED_SPEC = ("template", "service", "eventBusName", "replicas")


def rfc1123(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "converted"


@dataclass(slots=True)
class SourceEvent:
    """One event of an EventSource (or guessed from the naming convention)."""

    source: str
    event: str
    type: str  # the Argo event source type; "" when unknown
    subject: str  # the eventsvc eventSubject
    context: dict[str, Any] = field(default_factory=dict)
    schedule: str | None = None  # calendar: the Schedule's name

    def implied(self) -> dict[str, str]:
        """Argo's context for these events: a context filter with these values is a no-op."""
        return {"type": self.type, "source": self.source, "subject": self.event}

    def ref(self, parts: tuple[str, ...]) -> Ref:
        """Map a path into Argo's event data onto eventsvc's event."""
        if self.type == "calendar":
            return _calendar_ref(parts)
        if self.type in ("github", "webhook", "nats") or parts[:1] in (("body",), ("header",)):
            return _wrapped_ref(parts, self.type)
        if not self.type:
            return Ref(parts)
        raise NotConvertible(f"events of {self.type!r} event sources have no eventsvc gateway")


def _wrapped_ref(parts: tuple[str, ...], kind: str) -> Ref:
    if parts[0] == "body":
        return Ref(parts[1:])
    if parts[0] in ("header", "headers") and len(parts) >= 2:
        name = parts[1].lower()
        attrs = {**_HEADERS, **(_GITHUB_HEADERS if kind in ("github", "") else {})}
        if name in attrs and (len(parts) == 2 or parts[2:] == ("0",)):
            return Ref(attribute=attrs[name])
        raise NotConvertible(f"HTTP header {parts[1]!r} is not kept on eventsvc events (only "
                             f"{', '.join(sorted(attrs))} are, as CloudEvents attributes)")
    if kind == "nats" and parts[0] == "subject":
        raise NotConvertible("the NATS subject of the message is not part of eventsvc's event "
                             "data; filter with the dependency's eventSubject")  # fmt: skip
    raise NotConvertible(f"{'.'.join(parts)!r}: Argo's {kind or 'webhook'} events hold only "
                         "body and header")  # fmt: skip


def _calendar_ref(parts: tuple[str, ...]) -> Ref:
    if parts == ("eventTime",):
        return Ref(("scheduledTime",))
    if parts[0] == "metadata":
        return Ref(("data", *parts[1:]))
    raise NotConvertible(f"{'.'.join(parts)!r}: a calendar event holds eventTime and metadata")


def guessed(source: str, event: str) -> SourceEvent:
    """No EventSource given: Argo's context convention on any subject."""
    return SourceEvent(source, event, "", "events.>", {"source": source, "subject": event})


@dataclass(slots=True)
class Sources:
    events: dict[tuple[str, str], SourceEvent] = field(default_factory=dict)
    schedules: list[tuple[dict[str, Any], dict[OutPath, list[str]]]] = field(
        default_factory=list)  # a Schedule document, and the comments it carries
    instructions: list[str] = field(default_factory=list)

    def find(self, source: str, event: str) -> SourceEvent:
        return self.events.get((source, event)) or guessed(source, event)


def convert_event_source(doc: yamldoc.Document, out: Output, found: Sources) -> None:
    """Record the events of one EventSource; calendar events become Schedules in `found`."""
    value = doc.value
    name = str(value.get("metadata", {}).get("name", "eventsource"))
    spec = value.get("spec") or {}
    for key in spec:
        if key in _IGNORED_SPEC:
            continue
        base = ("spec", key)
        events = spec[key]
        if key in SUPPORTED and not isinstance(events, Mapping):
            out.not_converted(base, (), f"{key} must map event names to their settings")
            continue
        if key not in SUPPORTED:
            out.not_converted(base, (), f"{key} event sources have no eventsvc gateway; "
                              "publish CloudEvents on events.<origin>.<kind> from a service, "
                              "or POST them to /events")  # fmt: skip
            continue
        for event, config in events.items():
            conf = config if isinstance(config, Mapping) else {}
            one = Output(doc)  # a calendar event's comments go into its Schedule
            _HANDLERS[key](name, str(event), conf, (*base, event), one, found)
            one.unknown(conf, _READ[key], (*base, event), ())
            out.findings += one.findings


def _github(name: str, event: str, conf: Mapping[str, Any], base: tuple[str | int, ...],
            out: Output, found: Sources) -> None:  # fmt: skip
    kinds = [str(e) for e in conf.get("events") or ["*"]]
    repos = [f"https://github.com/{r['owner']}/{n}" for r in conf.get("repositories") or []
             if isinstance(r, Mapping) for n in r.get("names") or []]  # fmt: skip
    if conf.get("owner") and conf.get("repository"):
        repos.append(f"https://github.com/{conf['owner']}/{conf['repository']}")
    context: dict[str, Any] = {}
    if "*" in kinds:
        subject = "events.github.>"
    elif len(kinds) == 1:
        subject = subjects.github(kinds[0])
    else:
        subject = "events.github.*"
        context["any"] = [{"githubevent": k} for k in kinds]
    orgs = [str(o) for o in conf.get("organizations") or []]
    prefixes = [f"https://github.com/{o}/" for o in orgs]
    if len(repos) + len(prefixes) == 1:
        context["source"] = repos[0] if repos else {"prefix": prefixes[0]}
    elif repos or prefixes:
        alts = [{"source": r} for r in repos] + [{"prefix": {"source": p}} for p in prefixes]
        context = {"all": [context, {"any": alts}]} if context else {"any": alts}
    found.events[(name, event)] = SourceEvent(name, event, "github", subject, context)
    lines = [f"EventSource {name}, event {event} (github):"]
    lines.append("  point the webhook of " + (", ".join(r.removeprefix("https://github.com/")
                 for r in repos) or ", ".join(orgs) or "the repositories") +
                 " at https://<eventsvc host>/webhooks/github, content type application/json")
    where = " ".join([f"--repo {r.removeprefix('https://github.com/')}" for r in repos]
                     + [f"--org {o}" for o in orgs]) or "--repo OWNER/NAME"
    lines.append(f"  (eventsvc github hooks sync {where} --url https://<eventsvc host>/webhooks/"
                 "github creates or repairs it, as Argo's event source did)")
    if "*" not in kinds:
        lines.append(f"  events: {', '.join(kinds)} (eventsvc config github.allowedEvents: "
                     f"[{', '.join(kinds)}] accepts only these)")
    secret = conf.get("webhookSecret")
    if isinstance(secret, Mapping):
        lines.append(f"  secret: mount key {secret.get('key')!r} of Secret {secret.get('name')!r} "
                     "and set EVENTSVC_GITHUB_WEBHOOK_SECRET_FILE to its path")
    token = conf.get("apiToken")
    if isinstance(token, Mapping):
        lines.append(f"  API token (Secret {token.get('name')!r}, key {token.get('key')!r}): "
                     "EVENTSVC_GITHUB_TOKEN(_FILE), for GitHub triggers and `eventsvc github`")
    app = conf.get("githubApp")
    if isinstance(app, Mapping):
        lines.append(f"  GitHub App {app.get('appID')}, installation {app.get('installationID')}:"
                     " EVENTSVC_GITHUB_APP_ID, EVENTSVC_GITHUB_INSTALLATION_ID, "
                     "EVENTSVC_GITHUB_APP_PRIVATE_KEY_FILE")  # fmt: skip
    hook: Mapping[str, Any] = conf["webhook"] if isinstance(conf.get("webhook"), Mapping) else {}
    if conf.get("githubBaseURL"):
        lines.append(f"  GitHub Enterprise {conf['githubBaseURL']}: EVENTSVC_GITHUB_API_URL "
                     "(the API root, e.g. https://HOST/api/v3)")  # fmt: skip
    if conf.get("insecure"):
        lines.append("  insecure: the hook skipped TLS verification; eventsvc github hooks sync "
                     "turns it on: give eventsvc a certificate GitHub trusts")  # fmt: skip
    if conf.get("metadata"):
        out.not_converted((*base, "metadata"), (), "event source metadata is not added to "
                          "GitHub events; read what you need from the event")  # fmt: skip
    if hook.get("url"):
        lines.append(f"  was served at {hook.get('url')}{hook.get('endpoint', '')}; eventsvc "
                     "serves /webhooks/github on port 12000 (http.port)")
    found.instructions += lines
    if conf.get("filter"):
        out.not_converted((*base, "filter"), (), "event source filters are not converted; "
                          "put the condition in the sensor's dependency filters")  # fmt: skip


def _calendar(name: str, event: str, conf: Mapping[str, Any], base: tuple[str | int, ...],
              out: Output, found: Sources) -> None:  # fmt: skip
    schedule = rfc1123(f"{name}-{event}")
    spec: dict[str, Any] = {}
    path = ("spec",)
    if conf.get("schedule"):
        spec["schedule"] = str(conf["schedule"])
    elif conf.get("interval"):
        spec["schedule"] = f"@every {conf['interval']}"
    else:
        out.not_converted(base, (), "a calendar event needs schedule or interval")
        return
    if conf.get("timezone"):
        spec["timezone"] = str(conf["timezone"])
    dates = [str(d)[:10] for d in conf.get("exclusionDates") or []]
    if dates:
        spec["exclusionDates"] = dates
        if any(len(str(d)) > 10 for d in conf["exclusionDates"]):
            out.note((*path, "exclusionDates"), "exclusion dates skip whole days, as in Argo")
    if conf.get("metadata"):
        spec["data"] = dict(conf["metadata"])
    if conf.get("persistence"):
        spec["catchup"] = {"policy": "last"}
        out.note((*path, "catchup"), "Argo's persistence (catchup) -> catchup.policy last; "
                 "the last tick is kept in JetStream KV, no ConfigMap")  # fmt: skip
    for key in ("filter",):
        if conf.get(key):
            out.not_converted((*base, key), (), "event source filters are not converted")
    doc = {"apiVersion": yamldoc.API_VERSION, "kind": "Schedule",
           "metadata": {"name": schedule}, "spec": spec}  # fmt: skip
    found.schedules.append((doc, out.comments))
    found.events[(name, event)] = SourceEvent(
        name, event, "calendar", f"events.cron.{schedule}",
        {"type": "dev.eventsvc.schedule.tick", "source": f"eventsvc://schedules/{schedule}"},
        schedule=schedule,
    )


def _webhook(name: str, event: str, conf: Mapping[str, Any], base: tuple[str | int, ...],
             out: Output, found: Sources) -> None:  # fmt: skip
    context = {"source": name, "subject": event}
    found.events[(name, event)] = SourceEvent(name, event, "webhook", "events.http.webhook",
                                              dict(context))  # fmt: skip
    was = f"{conf.get('endpoint', '/')}" + (f" on port {conf['port']}" if conf.get("port") else "")
    found.instructions += [
        f"EventSource {name}, event {event} (webhook, was {was}):",
        "  POST the same body to https://<eventsvc host>/events with headers ce-specversion: "
        f"1.0, ce-id: <unique>, ce-type: webhook, ce-source: {name}, ce-subject: {event}, "
        "Content-Type: application/json and Authorization: Bearer <token> "
        "(EVENTSVC_EVENTS_TOKEN); or: eventsvc send --type webhook "
        f"--source {name} --subject {event} --nats-subject events.http.webhook --data @body.json",
    ]
    if conf.get("authSecret"):
        out.note((), f"{name}/{event}: authSecret -> the /events bearer tokens "
                 "(EVENTSVC_EVENTS_TOKEN)")  # fmt: skip
    if conf.get("filter"):
        out.not_converted((*base, "filter"), (), "event source filters are not converted; "
                          "put the condition in the sensor's dependency filters")  # fmt: skip


def _nats(name: str, event: str, conf: Mapping[str, Any], base: tuple[str | int, ...],
          out: Output, found: Sources) -> None:  # fmt: skip
    subject = f"events.nats.{subjects.token(name)}.{subjects.token(event)}"
    found.events[(name, event)] = SourceEvent(name, event, "nats", subject,
                                              {"source": name, "subject": event})  # fmt: skip
    found.instructions += [
        f"EventSource {name}, event {event} (nats, was subject {conf.get('subject')!r}):",
        f"  publishers send CloudEvents (binary mode: ce-* headers; type nats, source {name}, "
        f"subject {event}) to {subject} on eventsvc's NATS with JetStream, the message body "
        f"as the event data; e.g. eventsvc send --type nats --source {name} --subject {event} "
        f"--nats-subject {subject} --data @body.json",
    ]
    if conf.get("filter"):
        out.not_converted((*base, "filter"), (), "event source filters are not converted; "
                          "put the condition in the sensor's dependency filters")  # fmt: skip


_HANDLERS = {"github": _github, "calendar": _calendar, "webhook": _webhook, "nats": _nats}
_SERVED = ("endpoint", "port", "method", "url", "serverCertSecret", "serverKeySecret",
           "maxPayloadSize")  # what eventsvc's own HTTP server settles  # fmt: skip
_READ: dict[str, tuple[str, ...]] = {
    "github": ("repositories", "owner", "repository", "organizations", "events", "webhook",
               "webhookSecret", "apiToken", "githubApp", "filter", "contentType", "active",
               "insecure", "deleteHookOnFinish", "githubBaseURL", "githubUploadURL",
               "id", "metadata"),
    "calendar": ("schedule", "interval", "timezone", "exclusionDates", "metadata",
                 "persistence", "filter"),
    "webhook": (*_SERVED, "authSecret", "filter", "metadata"),
    "nats": ("url", "subject", "jsonBody", "connectionBackoff", "tls", "auth", "filter",
             "metadata", "queue"),
}  # fmt: skip


