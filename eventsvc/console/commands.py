"""`eventsvc dlq list|replay|discard` and `eventsvc events`: what the console shows and
does, from the shell, reading the same streams through the same code (`store`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from eventsvc import logs
from eventsvc.bus import Bus
from eventsvc.console import store

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_NATS_HELP = (
    "default: EVENTSVC_NATS_URL, else the embedded server a local `eventsvc run` started "
    "(under EVENTSVC_DATA_DIR or .eventsvc), else nats://127.0.0.1:4222"
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dlq", help="list, replay or discard dead letters",
                       description="Dead letters: events a sensor gave up on (stream DLQ). "
                       "Replay republishes a letter's events on the subject they came on, "
                       "each with a new id and the extension attribute replayof=<old id>, "
                       "then removes the letter.")  # fmt: skip
    dsub = p.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    ls = dsub.add_parser("list", help="dead letters, newest first")
    ls.add_argument("--sensor", help="only this sensor's letters")
    ls.add_argument("--limit", type=int, default=200)
    _common(ls)
    ls.set_defaults(func=cmd_dlq_list)
    for name, func, verb in (("replay", cmd_dlq_replay, "republish"),
                             ("discard", cmd_dlq_discard, "delete")):  # fmt: skip
        c = dsub.add_parser(name, help=f"{verb} dead letters by sequence (see `dlq list`)")
        c.add_argument("seqs", nargs="*", type=int, metavar="SEQ")
        c.add_argument("--all", action="store_true", help="every letter (of --sensor)")
        c.add_argument("--sensor", help="with --all: only this sensor's letters")
        _common(c)
        c.set_defaults(func=func)

    e = sub.add_parser("events", help="search stored events, or tail new ones",
                       description="Stored events newest first (stream EVENTS), filtered "
                       "by text found in type, source and subject; --follow prints new "
                       "events as they are published.")  # fmt: skip
    e.add_argument("--type", default="", help="type contains this text")
    e.add_argument("--source", default="", help="source contains this text")
    e.add_argument("--subject", default="", help="subject contains this text")
    e.add_argument("--limit", type=int, default=50)
    e.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    _common(e)
    e.set_defaults(func=cmd_events)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", choices=["table", "json"], default="table",
                   help="json: one JSON object per line")  # fmt: skip
    p.add_argument("--nats-url", help=_NATS_HELP)


def _on_bus(command: str, args: argparse.Namespace, work: Callable[[Bus], Awaitable[int]]) -> int:
    from eventsvc import cli

    logs.configure("console", "error")  # stdout is the output
    return cli.on_bus(command, cli.nats_url_of(args), work)


def _print(args: argparse.Namespace, item: Mapping[str, Any], cells: list[Any]) -> None:
    if args.output == "json":
        print(json.dumps(item, default=str), flush=True)
    else:
        print("  ".join(str(c) for c in cells), flush=True)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    async def work(bus: Bus) -> int:
        for letter in await store.list_letters(bus, args.sensor or "", limit=args.limit):
            events: dict[str, Any] = letter.get("events") or {}
            event: dict[str, Any] = letter.get("event") or next(iter(events.values()), {})
            _print(args, letter, [f"#{letter['seq']}", letter.get("sensor"),
                                  letter.get("trigger") or "-", letter.get("reason"),
                                  event.get("id", "-"),
                                  str(letter.get("error") or "")[:120]])  # fmt: skip
        return EXIT_OK

    return _on_bus("dlq list", args, work)


async def _targets(bus: Bus, args: argparse.Namespace) -> list[int] | None:
    if args.all == bool(args.seqs):
        print(f"eventsvc dlq {args.dlq_command}: give sequences (see `eventsvc dlq list`) "
              "or --all", file=sys.stderr)  # fmt: skip
        return None
    if args.seqs:
        return list(args.seqs)
    return [int(x["seq"]) for x in await store.list_letters(bus, args.sensor or "",
                                                           limit=1_000_000)]  # fmt: skip


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    async def work(bus: Bus) -> int:
        seqs = await _targets(bus, args)
        if seqs is None:
            return EXIT_USAGE
        failed = False
        for seq in seqs:
            try:
                ids = await store.replay(bus, seq)
            except store.ReplayError as e:
                failed = True
                _print(args, {"seq": seq, "error": str(e)}, [f"#{seq}", "not replayed:", e])
                continue
            _print(args, {"seq": seq, "ids": ids}, [f"#{seq}", "replayed as", ", ".join(ids)])
        return EXIT_FAILED if failed else EXIT_OK

    return _on_bus("dlq replay", args, work)


def cmd_dlq_discard(args: argparse.Namespace) -> int:
    async def work(bus: Bus) -> int:
        seqs = await _targets(bus, args)
        if seqs is None:
            return EXIT_USAGE
        missing = False
        for seq in seqs:
            gone = await store.discard(bus, seq)
            missing |= not gone
            _print(args, {"seq": seq, "discarded": gone},
                   [f"#{seq}", "discarded" if gone else "not found"])  # fmt: skip
        return EXIT_FAILED if missing else EXIT_OK

    return _on_bus("dlq discard", args, work)


def _event_cells(item: Mapping[str, Any]) -> list[Any]:
    return [item.get("time", "-"), item.get("id"), item.get("type"), item.get("source"),
            item.get("subject") or "-", item.get("natsSubject")]  # fmt: skip


def cmd_events(args: argparse.Namespace) -> int:
    filters = {"type": args.type, "source": args.source, "subject": args.subject}

    async def work(bus: Bus) -> int:
        found = await store.list_events(bus, filters, limit=args.limit)
        for item in reversed(found):  # oldest first, as a log reads; new ones follow below
            _print(args, item, _event_cells(item))
        if args.follow:
            await _follow(bus, filters, args)
        return EXIT_OK

    return _on_bus("events", args, work)


async def _follow(bus: Bus, filters: Mapping[str, str], args: argparse.Namespace) -> None:
    from eventsvc.console.api import live_item

    test = store.contains(filters)
    subscription = await bus.subscribe("events.>")
    try:
        while True:
            got = await subscription.next(timeout=60.0)
            item = await live_item(bus, *got) if got is not None else None
            if item is not None and test(item):
                _print(args, item, _event_cells(item))
    finally:
        await subscription.close()
