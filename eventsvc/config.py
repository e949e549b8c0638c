"""Service configuration: a YAML file, then `EVENTSVC_*` environment variables on top.

Secrets come from environment variables or mounted files (`<NAME>_FILE`) and are
never logged: `Config.redacted()` is what start-up prints.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eventsvc.durations import parse_duration
from eventsvc.errors import ConfigError
from eventsvc.logs import redact_url

ENV_PREFIX = "EVENTSVC_"
COMPONENTS = ("gateway", "sensors", "cron", "watch")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a bool; use true or false")


def _int(value: Any) -> int:
    if isinstance(value, bool) or not str(value).strip().lstrip("-").isdigit():
        raise ValueError("Not a whole number.")
    return int(value)


def _list(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().upper()
    for suffix, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


@dataclass(frozen=True, slots=True)
class EventsToken:
    """A bearer token for `POST /events`, and what it may publish: CloudEvent `type` and
    `source` prefixes (an event must match one of each list given; none given: anything)."""

    token: str = field(repr=False)
    types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def redacted(self) -> dict[str, Any]:
        return {"token": "<redacted>", "types": list(self.types), "sources": list(self.sources)}


EVENTS_TOKEN_ENV = "EVENTSVC_EVENTS_TOKEN"
EVENTS_TOKEN_SYNTAX = (
    "<token>[:type=<prefix>;source=<prefix>;...], entries separated by commas or newlines"
)
_RESTRICTIONS = {"type": "types", "source": "sources"}


def parse_events_tokens(text: str, origin: str = EVENTS_TOKEN_ENV) -> tuple[EventsToken, ...]:
    """The tokens of `EVENTSVC_EVENTS_TOKEN` (or its file), in the syntax
    `<token>[:type=<prefix>;source=<prefix>;...]`, entries comma- or newline-separated.

    Restrictions of one attribute may repeat (the event must match one of them); both
    attributes must match when both are given. A token has no whitespace, `:`, `;` or `,`.
    Errors name the entry by number and never quote the token or any part of it.
    """
    tokens: list[EventsToken] = []
    seen: dict[str, int] = {}
    entries = [e.strip() for e in re.split(r"[,\n]", text) if e.strip()]
    for number, entry in enumerate(entries, 1):
        where = f"{origin}: entry {number}"
        token, colon, rules = entry.partition(":")
        token = token.strip()
        if not token or token.split("=")[0].strip() in _RESTRICTIONS:
            raise ConfigError(f"{where} has no token before its restrictions; "
                              f"write {EVENTS_TOKEN_SYNTAX}")  # fmt: skip
        if ";" in token:
            raise ConfigError(f"{where}: a token cannot contain ';'; restrictions follow "
                              f"a ':' ({EVENTS_TOKEN_SYNTAX})")  # fmt: skip
        if (not (token.isascii() and token.isprintable()) or token.startswith("#")
                or any(c.isspace() for c in token)):  # fmt: skip
            raise ConfigError(f"{where}: a token is printable ASCII without spaces and "
                              "does not start with '#' (a comment or a 'Bearer ' prefix "
                              "in the secret?)")  # fmt: skip
        limits: dict[str, list[str]] = {"types": [], "sources": []}
        parts = [r.strip() for r in rules.split(";") if r.strip()]
        if colon and not parts:
            raise ConfigError(f"{where} has ':' and no restriction after it; "
                              f"write {EVENTS_TOKEN_SYNTAX}")  # fmt: skip
        for index, rule in enumerate(parts, 1):
            attr, eq, prefix = (p.strip() for p in rule.partition("="))
            if not eq or attr not in _RESTRICTIONS:
                # never echo the text: a token holding ':' would be shown in part
                close = difflib.get_close_matches(attr, list(_RESTRICTIONS), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if eq and close else ""
                raise ConfigError(f"{where}, restriction {index}: not type=<prefix> or "
                                  f"source=<prefix>{hint}; a token cannot contain ':'")  # fmt: skip
            if not prefix:
                raise ConfigError(f"{where}, restriction {index}: {attr}= needs a prefix")
            limits[_RESTRICTIONS[attr]].append(prefix)
        if token in seen:
            raise ConfigError(f"{origin}: entries {seen[token]} and {number} hold the same "
                              "token; give it one entry")  # fmt: skip
        seen[token] = number
        tokens.append(EventsToken(token, tuple(limits["types"]), tuple(limits["sources"])))
    return tuple(tokens)


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # dotted path in the YAML file
    attr: str  # Config attribute
    parse: Callable[[Any], Any]

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.attr.upper()


@dataclass(frozen=True, slots=True)
class Config:
    # HTTP intake: loopback unless told otherwise (a pod sets 0.0.0.0 in its config)
    http_host: str = "127.0.0.1"
    http_port: int = 12000
    max_body_bytes: int = 25 * 1024 * 1024
    max_inflight_bytes: int = 100 * 1024 * 1024
    """Bytes of request bodies held at once across every request (both intake endpoints);
    past it a request is answered 503 + Retry-After before its body is read, so memory stays
    inside the pod's limit whatever many senders do. At least `max_body_bytes`."""
    # NATS: no URL means an embedded nats-server
    nats_url: str | None = None
    nats_user: str | None = None
    nats_password: str | None = field(default=None, repr=False)
    nats_token: str | None = field(default=None, repr=False)
    nats_creds_file: str | None = None
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    nats_port: int = 4222
    data_dir: str = ".eventsvc"
    publish_timeout: float = 5.0
    # streams
    stream_replicas: int = 1
    duplicate_window: float = 24 * 3600.0
    events_max_age: float = 7 * 24 * 3600.0
    events_max_bytes: int = -1
    events_max_msgs: int = -1
    # sensors
    sensors_dir: str = "sensors"
    components: tuple[str, ...] = COMPONENTS
    max_deliveries: int = 5
    redelivery_delay: float = 2.0
    ack_wait: float = 60.0
    sensor_concurrency: int = 16
    # GitHub gateway
    github_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    github_insecure_no_signature: bool = False
    github_allowed_events: tuple[str, ...] = ()
    # promotion: file:// repository URLs (tests, local mirrors); off, as event data may name one
    promotion_allow_file_urls: bool = False
    # CloudEvents gateway: bearer tokens for POST /events (EVENTSVC_EVENTS_TOKEN), and the
    # file they were to be read from (EVENTSVC_EVENTS_TOKEN_FILE): a named file that is
    # missing or empty keeps /events closed, even on loopback
    events_tokens: tuple[EventsToken, ...] = field(default=(), repr=False)
    events_token_file: str | None = None
    # lifecycle, logs
    drain_timeout: float = 20.0
    nats_unhealthy_after: float = 120.0
    """`/healthz` fails once NATS has been unreachable this long, so Kubernetes restarts a
    pod whose client cannot find its way back (0: never)."""
    shutdown_grace: float = 5.0
    """On SIGTERM, how long the HTTP port keeps answering (readiness failing, every answer
    closing its connection) before it closes: requests already on their way get answers."""
    log_format: str = "auto"
    log_level: str = "info"
    # sections owned by single parts (kubernetes, github api, ...), as written
    sections: Mapping[str, Any] = field(default_factory=dict)

    def redacted(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("github_webhook_secrets", "nats_password", "nats_token"):
            if out.get(name):
                out[name] = "<redacted>"
        out["events_tokens"] = [t.redacted() for t in self.events_tokens]
        if self.nats_url:
            out["nats_url"] = redact_url(self.nats_url)
        out.pop("sections", None)
        return out

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.sections.get(name, {})
        return value if isinstance(value, Mapping) else {}


SETTINGS: tuple[Setting, ...] = (
    Setting("http.host", "http_host", str),
    Setting("http.port", "http_port", _int),
    Setting("http.maxBodyBytes", "max_body_bytes", _size),
    Setting("http.maxInflightBytes", "max_inflight_bytes", _size),
    Setting("nats.url", "nats_url", _opt_str),
    Setting("nats.user", "nats_user", _opt_str),
    Setting("nats.password", "nats_password", _opt_str),
    Setting("nats.token", "nats_token", _opt_str),
    Setting("nats.credsFile", "nats_creds_file", _opt_str),
    Setting("nats.tls.ca", "nats_tls_ca", _opt_str),
    Setting("nats.tls.cert", "nats_tls_cert", _opt_str),
    Setting("nats.tls.key", "nats_tls_key", _opt_str),
    Setting("nats.port", "nats_port", _int),
    Setting("dataDir", "data_dir", str),
    Setting("nats.publishTimeout", "publish_timeout", parse_duration),
    Setting("streams.replicas", "stream_replicas", _int),
    Setting("streams.duplicateWindow", "duplicate_window", parse_duration),
    Setting("streams.events.maxAge", "events_max_age", parse_duration),
    Setting("streams.events.maxBytes", "events_max_bytes", _size),
    Setting("streams.events.maxMsgs", "events_max_msgs", _int),
    Setting("sensors.dir", "sensors_dir", str),
    Setting("components", "components", _list),
    Setting("sensors.maxDeliveries", "max_deliveries", _int),
    Setting("sensors.redeliveryDelay", "redelivery_delay", parse_duration),
    Setting("sensors.ackWait", "ack_wait", parse_duration),
    Setting("sensors.concurrency", "sensor_concurrency", _int),
    Setting("github.webhookSecrets", "github_webhook_secrets", _list),
    Setting("github.insecureNoSignature", "github_insecure_no_signature", _bool),
    Setting("github.allowedEvents", "github_allowed_events", _list),
    Setting("promotion.allowFileUrls", "promotion_allow_file_urls", _bool),
    Setting("drainTimeout", "drain_timeout", parse_duration),
    Setting("http.shutdownGrace", "shutdown_grace", parse_duration),
    Setting("nats.unhealthyAfter", "nats_unhealthy_after", parse_duration),
    Setting("log.format", "log_format", str),
    Setting("log.level", "log_level", str),
)
_OWN_TOP_KEYS = {s.key.split(".")[0] for s in SETTINGS}
# top keys shared with a part: their raw subtree is also readable with `Config.section`
# (`github`: webhook settings above, API access settings read by `eventsvc.github`;
# `promotion`: allowFileUrls above, gitCacheDir read by `eventsvc.github.mirror`)
_SHARED_TOP_KEYS = {"github", "promotion"}
# secrets read from <ENV> or the file named by <ENV>_FILE
_SECRET_ENV = {
    "github_webhook_secrets": "EVENTSVC_GITHUB_WEBHOOK_SECRET",
    "nats_password": "EVENTSVC_NATS_PASSWORD",
    "nats_token": "EVENTSVC_NATS_TOKEN",
}


def read_secret(
    env_name: str, environ: Mapping[str, str] | None = None, *, missing_ok: bool = False
) -> str | None:
    """The secret in `env_name`, or in the file named by `env_name`_FILE; None when neither,
    or (with `missing_ok`, for a Secret mounted as optional) when the file does not exist."""
    env = os.environ if environ is None else environ
    if env.get(env_name):
        return env[env_name]
    path = env.get(env_name + "_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as e:
        if missing_ok and isinstance(e, FileNotFoundError):
            return None
        raise ConfigError(
            f"{env_name}_FILE={path!r} cannot be read ({e.strerror}); "
            "mount the secret there or unset the variable"
        ) from e


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Defaults < YAML file < EVENTSVC_* variables < explicit overrides (CLI flags)."""
    env = os.environ if environ is None else environ
    path = path or env.get(ENV_PREFIX + "CONFIG")
    tree: Mapping[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from e
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top")
        tree = loaded
    _check_keys(tree, path)
    values: dict[str, Any] = {}
    for s in SETTINGS:
        for origin, raw in ((f"{path}: {s.key}", _lookup(tree, s.key)), (s.env, env.get(s.env))):
            if raw is None:
                continue
            try:
                values[s.attr] = s.parse(raw)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"Config '{origin}' has value {raw!r}. {e}") from e
    for attr, env_name in _SECRET_ENV.items():
        secret = read_secret(env_name, env)
        if secret is not None:
            values[attr] = _list(secret) if attr == "github_webhook_secrets" else secret
    values.update(_events_tokens(env))
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["sections"] = {
        k: v for k, v in tree.items() if k not in _OWN_TOP_KEYS - _SHARED_TOP_KEYS
    }
    config = Config(**values)
    _check(config)
    return config


def _events_tokens(env: Mapping[str, str]) -> dict[str, Any]:
    """`events_tokens` and `events_token_file` from EVENTSVC_EVENTS_TOKEN(_FILE). The file
    may be missing: the Deployment mounts its Secret as optional, and without the Secret
    the gateway must still start (for GitHub's webhooks) with /events closed."""
    if env.get(EVENTS_TOKEN_ENV):
        return {"events_tokens": parse_events_tokens(env[EVENTS_TOKEN_ENV])}
    path = env.get(EVENTS_TOKEN_ENV + "_FILE")
    if not path:
        return {}
    text = read_secret(EVENTS_TOKEN_ENV, env, missing_ok=True) or ""
    origin = f"{EVENTS_TOKEN_ENV}_FILE ({path})"
    return {"events_tokens": parse_events_tokens(text, origin), "events_token_file": path}


# keys that are not settings of the file, and where their value goes instead
_NOT_IN_FILE = {
    "http.events": f"the /events tokens are secrets: set {EVENTS_TOKEN_ENV} or "
    f"{EVENTS_TOKEN_ENV}_FILE ({EVENTS_TOKEN_SYNTAX})",
}


# top-level sections read by parts with `Config.section`; other names close to these or to
# our own keys are typos (a name far from all may be a newer part's and is let through)
PART_SECTIONS = ("github", "kubernetes", "promotion")


def _check_keys(tree: Mapping[str, Any], path: Any) -> None:
    """A misspelt key in the config file is an error, not a setting silently left default."""
    own = {s.key for s in SETTINGS}
    groups = {k.rsplit(".", i)[0] for k in own for i in range(1, k.count(".") + 1)}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key in node:
            full = f"{prefix}{key}"
            if full in own or full in PART_SECTIONS:  # a part's section: its own keys
                continue
            if full in _NOT_IN_FILE:
                raise ConfigError(f"config file {str(path)!r}: '{full}' is not read from "
                                  f"the file; {_NOT_IN_FILE[full]}")  # fmt: skip
            siblings = [k[len(prefix):].split(".")[0] for k in own | groups
                        if k.startswith(prefix)]  # fmt: skip
            if full in groups:
                if not isinstance(node[key], Mapping):
                    raise ConfigError(f"config file {str(path)!r}: '{full}' must be a mapping "
                                      f"of settings, got {node[key]!r}")  # fmt: skip
                walk(node[key], full + ".")
                continue
            if not prefix and (not difflib.get_close_matches(
                    key, siblings + list(PART_SECTIONS), n=1, cutoff=0.75)):  # fmt: skip
                continue
            close = difflib.get_close_matches(key, siblings + (
                list(PART_SECTIONS) if not prefix else []), n=1, cutoff=0.6)  # fmt: skip
            hint = f"did you mean '{prefix}{close[0]}'?" if close else (
                f"known here: {', '.join(sorted(set(siblings)))}")  # fmt: skip
            raise ConfigError(f"config file {str(path)!r}: unknown key '{full}'; {hint}")

    walk(tree, "")


# GitHub's webhook event names (X-GitHub-Event); a name close to one of these is a typo,
# one far from all of them may be newer than this list and is let through
GITHUB_EVENTS = (
    "branch_protection_configuration", "branch_protection_rule", "check_run", "check_suite",
    "code_scanning_alert", "commit_comment", "create", "custom_property",
    "custom_property_values", "delete", "dependabot_alert", "deploy_key", "deployment",
    "deployment_protection_rule", "deployment_review", "deployment_status", "discussion",
    "discussion_comment", "fork", "github_app_authorization", "gollum", "installation",
    "installation_repositories", "installation_target", "issue_comment", "issues", "label",
    "marketplace_purchase", "member", "membership", "merge_group", "meta", "milestone",
    "org_block", "organization", "package", "page_build", "personal_access_token_request",
    "ping", "project", "project_card", "project_column", "projects_v2", "projects_v2_item",
    "public", "pull_request", "pull_request_review", "pull_request_review_comment",
    "pull_request_review_thread", "push", "registry_package", "release", "repository",
    "repository_advisory", "repository_dispatch", "repository_import", "repository_ruleset",
    "repository_vulnerability_alert", "secret_scanning_alert",
    "secret_scanning_alert_location", "security_advisory", "security_and_analysis",
    "sponsorship", "star", "status", "team", "team_add", "watch", "workflow_dispatch",
    "workflow_job", "workflow_run",
)


def _check(config: Config) -> None:
    unknown = [c for c in config.components if c not in COMPONENTS]
    if unknown:
        raise ConfigError(
            f"Config 'components' has value {','.join(unknown)!r}. "
            f"Choose from {', '.join(COMPONENTS)}."
        )
    if config.max_deliveries < 1:
        raise ConfigError("Config 'sensors.maxDeliveries' must be at least 1.")
    if config.max_inflight_bytes < config.max_body_bytes:
        raise ConfigError(
            f"Config 'http.maxInflightBytes' ({config.max_inflight_bytes}) is smaller than "
            f"'http.maxBodyBytes' ({config.max_body_bytes}): no body of the largest size "
            "could ever be received; raise maxInflightBytes or lower maxBodyBytes."
        )
    for name in config.github_allowed_events:  # a typo here drops every such webhook
        close = difflib.get_close_matches(name, GITHUB_EVENTS, n=1, cutoff=0.8)
        if name not in GITHUB_EVENTS and close:
            raise ConfigError(
                f"Config 'github.allowedEvents' has {name!r}, which is not a GitHub webhook "
                f"event; did you mean {close[0]!r}?"
            )
    if config.log_format not in ("auto", "json", "console"):
        raise ConfigError(
            f"Config 'log.format' has value {config.log_format!r}. Use auto, json or console."
        )
