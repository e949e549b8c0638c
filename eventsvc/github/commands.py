"""`eventsvc github ...` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from eventsvc.config import load_config
from eventsvc.durations import format_duration, parse_duration
from eventsvc.errors import ConfigError, ExternalError
from eventsvc.github import hooks, redeliver
from eventsvc.github.client import GitHubClient, GitHubSettings

_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("github", help="GitHub helpers (redeliver failed webhooks)")
    gsub = p.add_subparsers(dest="github_command", required=True, metavar="COMMAND")
    r = gsub.add_parser(
        "redeliver",
        help="ask GitHub to redeliver webhook deliveries that failed",
        description="List a hook's recent deliveries and redeliver the failed ones "
        "(HTTP status >= 400 or no answer) whose GUID has not succeeded since. "
        "Without --repo: the GitHub App's webhook (needs App credentials).",
    )
    r.add_argument("--since", default="24h", help="look back this far (default 24h)")
    r.add_argument("--repo", help="owner/name of a repository webhook")
    r.add_argument("--hook-id", type=int, help="the repository hook id (default: every hook)")
    r.add_argument("--dry-run", action="store_true", help="list what would be redelivered")
    r.add_argument("--config", help="YAML config file (or EVENTSVC_CONFIG)")
    r.set_defaults(func=cmd_redeliver)
    hooks.add_parser(gsub)


def cmd_redeliver(args: argparse.Namespace) -> int:
    try:
        seconds = parse_duration(args.since)
    except ValueError as e:
        print(f"eventsvc github redeliver: --since: {e}", file=sys.stderr)
        return 2
    if args.hook_id is not None and not args.repo:
        print("eventsvc github redeliver: --hook-id needs --repo owner/name", file=sys.stderr)
        return 2
    if args.repo and not _REPO.fullmatch(args.repo):
        print(f"eventsvc github redeliver: --repo {args.repo!r} is not owner/name, "
              "e.g. acme/shop", file=sys.stderr)  # fmt: skip
        return 2
    try:
        settings = GitHubSettings.from_config(load_config(args.config))
        summary = asyncio.run(_run(settings, args, seconds))
    except ConfigError as e:  # missing credentials: a configuration error, as for every command
        print(f"eventsvc github redeliver: {e}", file=sys.stderr)
        return 2
    except ExternalError as e:
        print(f"eventsvc github redeliver: {e}", file=sys.stderr)
        return 1
    verb = "would redeliver" if args.dry_run else "redelivered"
    count = len(summary.lines) if args.dry_run else summary.redelivered
    print(
        f"{summary.failed} failed delivery(ies) in the last {format_duration(seconds)}: "
        f"{verb} {count}, {summary.errors} redelivery error(s), "
        f"{summary.skipped} already succeeded later"
    )
    return 1 if summary.errors else 0


async def _run(
    settings: GitHubSettings, args: argparse.Namespace, seconds: float
) -> redeliver.Summary:
    client = GitHubClient(settings)
    try:
        if not args.repo:
            hooks = [redeliver.Hook()]
        elif args.hook_id is not None:
            hooks = [redeliver.Hook(args.repo, args.hook_id)]
        else:
            hooks = await redeliver.hooks_of(client, args.repo)
        lines: list[str] = []

        def echo(line: str) -> None:
            lines.append(line)
            print(line, flush=True)

        summary = await redeliver.redeliver(
            client, hooks, redeliver.since_from(seconds), args.dry_run, echo
        )
        summary.lines = lines
        return summary
    finally:
        await client.close()
