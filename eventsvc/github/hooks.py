"""`eventsvc github hooks sync|status`: the webhooks that feed eventsvc, kept as configured.

`sync` makes each repository (or organisation) have exactly one webhook for eventsvc's
URL, with content type JSON, the configured secret, TLS verification on, and the events
the sensors read (from their `eventSubject` and `githubevent`/`type` filters, or given).
It creates the hook when there is none, repairs it when it differs, and never creates
a second hook for the same URL: more than one is reported for a person to delete. It is
idempotent. GitHub never shows a hook's secret, so a secret that changed is sent again
only with `--reset-secret`. `status` shows each hook's last response and its recent
deliveries with their status codes.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eventsvc import yamldoc
from eventsvc.config import load_config
from eventsvc.errors import ConfigError, ExternalError
from eventsvc.github.client import GitHubClient, GitHubSettings

ALL = "*"


@dataclass(frozen=True, slots=True)
class Target:
    """A repository (`owner/name`) or an organisation whose hooks are managed."""

    name: str
    org: bool = False

    @property
    def hooks_path(self) -> str:
        return f"/orgs/{self.name}/hooks" if self.org else f"/repos/{self.name}/hooks"

    @property
    def repo(self) -> str | None:
        return None if self.org else self.name

    def __str__(self) -> str:
        return f"org {self.name}" if self.org else self.name


@dataclass(frozen=True, slots=True)
class Desired:
    url: str
    events: tuple[str, ...]  # sorted; ("*",) for every event
    secret: str = field(repr=False)

    def config(self) -> dict[str, str]:
        return {"url": self.url, "content_type": "json", "insecure_ssl": "0",
                "secret": self.secret}  # fmt: skip


@dataclass(slots=True)
class Change:
    target: Target
    action: str  # create | update | ok | duplicate
    hook_id: int | None = None
    differences: list[str] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)

    def describe(self, dry_run: bool = False) -> str:
        hook = f"hook {self.hook_id}" if self.hook_id is not None else "a hook"
        if self.action == "create":
            verb = "would create" if dry_run else "created"
            return (f"{self.target}: {verb} {hook} for {self.body['config']['url']} "
                    f"(events: {', '.join(self.body['events'])})")  # fmt: skip
        if self.action == "update":
            verb = "would repair" if dry_run else "repaired"
            return f"{self.target}: {verb} {hook}: {'; '.join(self.differences)}"
        if self.action == "duplicate":
            return (f"{self.target}: {hook} is a second hook for the same URL; GitHub would "
                    "deliver every event twice: delete it in the repository settings")  # fmt: skip
        return f"{self.target}: {hook} is up to date"


# -- which events the sensors read ---------------------------------------------------------


def _context_events(context: Any) -> set[str]:
    """GitHub event names a context filter pins (`githubevent`, or `type` com.github.X...)."""
    found: set[str] = set()
    if isinstance(context, list):
        for item in context:
            found |= _context_events(item)
        return found
    if not isinstance(context, Mapping):
        return found
    for key, value in context.items():
        if key in ("all", "any"):
            found |= _context_events(value)
        elif key in ("exact", "prefix") and isinstance(value, Mapping):
            found |= _context_events({k: v for k, v in value.items()})
        elif key == "githubevent" and isinstance(value, str):
            found.add(value)
        elif key == "githubevent" and isinstance(value, Mapping) and "exact" in value:
            found.add(str(value["exact"]))
        elif key == "type":
            text = value if isinstance(value, str) else (
                value.get("exact") or value.get("prefix") if isinstance(value, Mapping) else None)
            parts = str(text or "").split(".")
            if len(parts) >= 3 and parts[:2] == ["com", "github"] and parts[2]:
                found.add(parts[2])
    return found


def events_for(dependencies: Iterable[tuple[str, Any]]) -> tuple[str, ...]:
    """The GitHub events a hook must send for dependencies given as (eventSubject, context).

    `events.github.<event>` names one; `events.github.*`/`>` and `events.>` take the events
    their context pins, and every event when a GitHub subject pins none. Dependencies on
    other origins, and `events.>` without a GitHub context, need nothing from GitHub.
    """
    events: set[str] = set()
    for subject, context in dependencies:
        tokens = subject.split(".")
        if tokens[0] != "events" or len(tokens) < 2:
            continue
        if tokens[1] == "github" and len(tokens) >= 3 and tokens[2] not in ("*", ">"):
            events.add(tokens[2])
            continue
        pinned = _context_events(context)
        if tokens[1] == "github" or (tokens[1] in ("*", ">") and pinned):
            events |= pinned or {ALL}
    return (ALL,) if ALL in events else tuple(sorted(events))


def sensor_dependencies(documents: Iterable[Any]) -> list[tuple[str, Any]]:
    """(eventSubject, context filter) of every dependency of the Sensor documents given."""
    out: list[tuple[str, Any]] = []
    for value in documents:
        if not isinstance(value, Mapping) or value.get("kind") != "Sensor":
            continue
        spec = value.get("spec")
        deps = spec.get("dependencies") if isinstance(spec, Mapping) else None
        for dep in deps if isinstance(deps, list) else []:
            if not isinstance(dep, Mapping):
                continue
            filters = dep.get("filters")
            context = filters.get("context") if isinstance(filters, Mapping) else None
            out.append((str(dep.get("eventSubject", "events.>")), context))
    return out


# -- plan and apply --------------------------------------------------------------------------


def plan(target: Target, hooks: list[Mapping[str, Any]], desired: Desired,
         reset_secret: bool = False) -> list[Change]:  # fmt: skip
    """What to do so that `target` has one correct hook for `desired.url`."""
    mine = [h for h in hooks if (h.get("config") or {}).get("url") == desired.url]
    body = {"name": "web", "active": True, "events": list(desired.events),
            "config": desired.config()}  # fmt: skip
    if not mine:
        return [Change(target, "create", body=body)]
    first, *others = sorted(mine, key=lambda h: int(h.get("id", 0)))
    diffs = differences(first, desired)
    if reset_secret:
        diffs.append("secret sent again (--reset-secret)")
    change = Change(target, "update" if diffs else "ok", int(first["id"]), diffs,
                    body if diffs else {})  # fmt: skip
    return [change, *(Change(target, "duplicate", int(h["id"])) for h in others)]


def differences(hook: Mapping[str, Any], desired: Desired) -> list[str]:
    config = hook.get("config") or {}
    out: list[str] = []
    have = sorted(str(e) for e in hook.get("events") or [])
    if have != sorted(desired.events):
        out.append(f"events {', '.join(have) or '(none)'} -> {', '.join(desired.events)}")
    if config.get("content_type") != "json":
        out.append(f"content type {config.get('content_type')!r} -> 'json' (eventsvc reads "
                   "JSON bodies)")  # fmt: skip
    if str(config.get("insecure_ssl", "0")) != "0":
        out.append("TLS verification off -> on")
    if not hook.get("active", True):
        out.append("inactive -> active")
    return out


async def sync(client: GitHubClient, targets: list[Target], desired: Desired, *,
               dry_run: bool = False, reset_secret: bool = False,
               echo: Callable[[str], None] = print) -> list[Change]:  # fmt: skip
    """Plan, and unless `dry_run` apply, each target's change; every line is echoed."""
    done: list[Change] = []
    for target in targets:
        hooks = [h async for h in client.paginate(target.hooks_path, repo=target.repo)]
        for change in plan(target, hooks, desired, reset_secret):
            if not dry_run and change.action == "create":
                made = await client.call("POST", target.hooks_path, json=change.body,
                                         repo=target.repo)  # fmt: skip
                change.hook_id = int(made["id"])
            elif not dry_run and change.action == "update":
                await client.call("PATCH", f"{target.hooks_path}/{change.hook_id}",
                                  json=change.body, repo=target.repo)  # fmt: skip
            echo(change.describe(dry_run))
            done.append(change)
    return done


# -- status ----------------------------------------------------------------------------------


async def status(client: GitHubClient, targets: list[Target], url: str | None, limit: int,
                 echo: Callable[[str], None] = print) -> int:  # fmt: skip
    """Each hook (of `url`, or all), its last response and its last `limit` deliveries;
    the number of hooks whose last delivery failed."""
    failing = 0
    for target in targets:
        hooks = [h async for h in client.paginate(target.hooks_path, repo=target.repo)]
        hooks = [h for h in hooks if url is None or (h.get("config") or {}).get("url") == url]
        if not hooks:
            echo(f"{target}: no hook" + (f" for {url}" if url else ""))
        for hook in hooks:
            last = hook.get("last_response") or {}
            echo(f"{target}: hook {hook['id']} {(hook.get('config') or {}).get('url')} "
                 f"{'active' if hook.get('active', True) else 'INACTIVE'}, events "
                 f"{', '.join(hook.get('events') or [])}; last response "
                 f"{last.get('code') or '-'} {last.get('status') or ''} "
                 f"{last.get('message') or ''}".rstrip())  # fmt: skip
            path = f"{target.hooks_path}/{hook['id']}/deliveries"
            deliveries = [d async for d in client.paginate(path, repo=target.repo, limit=limit)]
            for d in deliveries:
                event = ".".join(str(x) for x in (d.get("event"), d.get("action")) if x)
                echo(f"  {d.get('delivered_at')}  {d.get('status_code'):>3}  "
                     f"{d.get('status') or ''}  {event}  {d.get('guid')}")
            if deliveries and not 200 <= int(deliveries[0].get("status_code") or 0) < 300:
                failing += 1
    return failing


# -- command line ------------------------------------------------------------------------------

_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def add_parser(gsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = gsub.add_parser("hooks", help="create, repair and inspect the GitHub webhooks")
    hsub = p.add_subparsers(dest="hooks_command", required=True, metavar="COMMAND")
    s = hsub.add_parser(
        "sync", help="create or repair the webhooks (one per repository or organisation)",
        description="Make each --repo/--org have one webhook for --url: JSON, the configured "
        "secret (EVENTSVC_GITHUB_WEBHOOK_SECRET), TLS verified, and the events the sensors "
        "read (or --events). Never a second hook for the same URL. Exit 0 done, 1 GitHub "
        "refused, 2 usage.",
    )  # fmt: skip
    _targets(s)
    s.add_argument("--url", required=True,
                   help="the webhook URL, e.g. https://events.example.com/webhooks/github")
    s.add_argument("--events", help="comma-separated events (default: what --sensors read)")
    s.add_argument("--sensors", default="sensors", help="sensor files or directory (default "
                   "sensors/)")  # fmt: skip
    s.add_argument("--reset-secret", action="store_true",
                   help="send the secret again even when nothing else differs")
    s.add_argument("--dry-run", action="store_true", help="print the changes, make none")
    s.set_defaults(func=cmd_sync)
    t = hsub.add_parser("status", help="each webhook's last deliveries and their status codes")
    _targets(t)
    t.add_argument("--url", help="only the hook for this URL")
    t.add_argument("--limit", type=int, default=10, help="deliveries per hook (default 10)")
    t.set_defaults(func=cmd_status)


def _targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME",
                   help="a repository; repeat for several")  # fmt: skip
    p.add_argument("--org", action="append", default=[], metavar="ORG",
                   help="an organisation (its organisation webhook); repeat for several")
    p.add_argument("--config", help="YAML config file (or EVENTSVC_CONFIG)")


def _parse_targets(args: argparse.Namespace) -> list[Target]:
    bad = [r for r in args.repo if not _REPO.fullmatch(r)] + [
        o for o in args.org if not _ORG.fullmatch(o)]  # fmt: skip
    if bad:
        raise ConfigError(f"{bad[0]!r} is not owner/name (--repo) or an organisation (--org)")
    targets = [Target(r) for r in args.repo] + [Target(o, org=True) for o in args.org]
    if not targets:
        raise ConfigError("give --repo OWNER/NAME or --org ORG")
    return targets


def _sensor_events(paths: list[str]) -> tuple[str, ...]:
    values = []
    for path in yamldoc.spec_files(paths):
        docs, _ = yamldoc.read_documents(path) if path.exists() else ([], [])
        values += [d.value for d in docs]
    return events_for(sensor_dependencies(values))


def cmd_sync(args: argparse.Namespace) -> int:
    try:
        targets = _parse_targets(args)
        config = load_config(args.config)
        if not config.github_webhook_secrets:
            raise ConfigError("no webhook secret: set EVENTSVC_GITHUB_WEBHOOK_SECRET(_FILE); "
                              "the gateway refuses unsigned deliveries")  # fmt: skip
        if args.events:
            events = tuple(sorted({e.strip() for e in args.events.split(",") if e.strip()}))
        else:
            events = _sensor_events([args.sensors])
        allowed = set(config.github_allowed_events)
        if allowed:  # the gateway refuses the others: a hook sending them only fails
            refused = [e for e in events if e not in allowed]
            if refused:
                print(f"eventsvc github hooks sync: {', '.join(refused)} left out: not in "
                      "github.allowedEvents, so the gateway would refuse them", file=sys.stderr)
            events = tuple(sorted(allowed)) if ALL in events else tuple(
                e for e in events if e in allowed)  # fmt: skip
        if not events:
            raise ConfigError(f"no sensor under {args.sensors} reads GitHub events; pass "
                              "--sensors DIR or --events push,pull_request")  # fmt: skip
        desired = Desired(args.url, events, config.github_webhook_secrets[0])
        settings = GitHubSettings.from_config(config)
    except ConfigError as e:
        print(f"eventsvc github hooks sync: {e}", file=sys.stderr)
        return 2
    return _run("sync", settings, lambda client: sync(
        client, targets, desired, dry_run=args.dry_run, reset_secret=args.reset_secret))


def cmd_status(args: argparse.Namespace) -> int:
    try:
        targets = _parse_targets(args)
        settings = GitHubSettings.from_config(load_config(args.config))
    except ConfigError as e:
        print(f"eventsvc github hooks status: {e}", file=sys.stderr)
        return 2
    return _run("status", settings, lambda client: status(client, targets, args.url,
                                                          max(1, args.limit)))  # fmt: skip


def _run(command: str, settings: GitHubSettings, work: Callable[[GitHubClient], Any]) -> int:
    async def main() -> Any:
        client = GitHubClient(settings)
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        asyncio.run(main())
    except ConfigError as e:  # missing credentials
        print(f"eventsvc github hooks {command}: {e}", file=sys.stderr)
        return 2
    except ExternalError as e:
        print(f"eventsvc github hooks {command}: {e}", file=sys.stderr)
        return 1
    return 0
