"""`eventsvc` command line. Exit codes: 0 ok, 1 findings or failures, 2 usage errors."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from eventsvc import __version__, events, loader, logs, subjects
from eventsvc.config import COMPONENTS, Config, load_config
from eventsvc.errors import BusError, ConfigError, SpecError

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
Command = Callable[[argparse.Namespace], int]


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the service (gateways, sensors, cron)")
    p.add_argument("--config", help="YAML config file (or EVENTSVC_CONFIG)")
    p.add_argument("--nats-url", help="NATS server(s); none starts an embedded nats-server")
    p.add_argument("--nats-port", type=int,
                   help="embedded NATS port (default 4222, or a free one when taken; 0: any)")
    p.add_argument("--data-dir", help="embedded NATS store and local state (default .eventsvc)")
    p.add_argument("--sensors", help="directory of sensor files (default sensors/)")
    p.add_argument("--components", help=f"comma-separated subset of: {','.join(COMPONENTS)}")
    p.add_argument("--host", help="HTTP listen address (or http.host, EVENTSVC_HTTP_HOST); "
                   "default 127.0.0.1, loopback only: 0.0.0.0 listens on every interface, "
                   "and then POST /events needs EVENTSVC_EVENTS_TOKEN(_FILE)")
    p.add_argument("--port", type=int, help="HTTP port (default 12000)")
    p.add_argument("--insecure-no-signature", action="store_true", default=None,
                   help="accept GitHub webhooks without a signature (trusted networks only)")
    p.add_argument("--log-format", choices=["auto", "json", "console"],
                   help="auto (default): readable on a terminal, JSON lines otherwise")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="default info; debug also shows why events were filtered out")
    p.set_defaults(func=cmd_run)


def _config_from(args: argparse.Namespace) -> Config:
    components = tuple(c.strip() for c in args.components.split(",")) if args.components else None
    return load_config(
        args.config,
        nats_url=args.nats_url,
        nats_port=args.nats_port,
        data_dir=args.data_dir,
        sensors_dir=args.sensors,
        components=components,
        http_host=args.host,
        http_port=args.port,
        github_insecure_no_signature=args.insecure_no_signature,
        log_format=args.log_format,
        log_level=args.log_level,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from eventsvc import runtime

    config = _config_from(args)
    logs.configure(config.log_format, config.log_level)
    logs.get("eventsvc").info("starting", version=__version__, config=config.redacted())
    try:
        runtime.run(config)
    except SpecError as e:
        print(f"eventsvc: sensors are invalid, not starting:\n{e}", file=sys.stderr)
        return EXIT_FINDINGS
    except BusError as e:
        print(f"eventsvc: {e}", file=sys.stderr)
        return EXIT_FINDINGS
    return EXIT_OK


def cmd_lint(args: argparse.Namespace) -> int:
    loaded = loader.load_paths(args.paths)
    for problem in sorted([*loaded.problems, *loaded.warnings],
                          key=lambda p: (p.file, p.line, p.field)):  # fmt: skip
        as_json = json.dumps(dataclasses.asdict(problem)) if args.output == "json" else None
        print(as_json or problem)
    if not loaded.files:
        print("eventsvc lint: no YAML files found", file=sys.stderr)
        return EXIT_USAGE
    bad = {p.file for p in loaded.problems}
    counts = {kind: len(objs) for kind, objs in loaded.by_kind.items()}
    summary = ", ".join(f"{n} {k.lower()}{'s' if n != 1 else ''}" for k, n in counts.items())
    warned = f", {len(loaded.warnings)} warning(s)" if loaded.warnings else ""
    print(
        f"{len(loaded.files)} file(s), {len(loaded.problems)} problem(s) in {len(bad)} file(s)"
        + warned + (f"; valid: {summary}" if summary else ""),
        file=sys.stderr,
    )
    return EXIT_FINDINGS if loaded.problems else EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from eventsvc.sensors.schema import sensor_schema

    print(json.dumps(sensor_schema(), indent=2))
    return EXIT_OK


def _data_arg(value: str | None) -> Any:
    if value is None:
        return None
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or e
            raise ConfigError(f"--data: cannot read {value[1:]!r} ({why})") from None
    else:
        text = value
    try:
        return json.loads(text)
    except ValueError as e:
        if text.lstrip()[:1] in ("{", "["):  # meant as JSON: a typo must not go out as text
            raise ConfigError(f"--data is not valid JSON ({e}); fix it, or send a file "
                              "with --data @file.json") from None  # fmt: skip
        return text


def cmd_send(args: argparse.Namespace) -> int:
    from eventsvc import bus as bus_mod

    data = _data_arg(args.data)
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": args.id or str(uuid.uuid4()),
        "type": args.type,
        "source": args.source,
        "subject": args.subject,
        "datacontenttype": "application/json" if not isinstance(data, str) else "text/plain",
    }
    event = events.make_event({k: v for k, v in attributes.items() if v is not None}, data)
    subject = args.nats_subject or "events.cli." + ".".join(
        subjects.token(t) for t in args.type.split(".")
    )
    url = nats_url_of(args)

    async def send(bus: bus_mod.Bus) -> int:
        headers, body = events.to_binary(event)
        ack = await bus.publish(subject, body, headers,
                                msg_id=f"{event.get_source()}:{event.get_id()}")  # fmt: skip
        state = "duplicate of" if ack.duplicate else "stored as"
        print(f"sent {event.get_id()} to {subject}: {state} {ack.stream} #{ack.seq}")
        return EXIT_OK

    return on_bus("send", url, send)


def on_bus(command: str, url: str, work: Callable[[Any], Awaitable[int]]) -> int:
    """Connect, run `work(bus)`, close; a bus failure is one line on stderr and exit 1."""
    from eventsvc import bus as bus_mod

    async def main() -> int:
        bus = await bus_mod.connect(url, load_config(), connect_timeout=3)
        try:
            return await work(bus)
        finally:
            await bus.close()

    try:
        return asyncio.run(main())
    except BusError as e:
        print(f"eventsvc {command}: {e}", file=sys.stderr)
        return EXIT_FINDINGS


def _add_test(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from eventsvc import dryrun

    dryrun.add_parser(sub)


def cmd_results(args: argparse.Namespace) -> int:
    from eventsvc import bus as bus_mod
    from eventsvc.bus.streams import RESULTS
    from eventsvc.sensors import results

    url = nats_url_of(args)
    subject = f"results.{subjects.token(args.sensor)}.>" if args.sensor else None
    logs.configure("console", "error")  # stdout is the table

    async def show(bus: bus_mod.Bus) -> int:
        if args.output == "table":
            print(results.header(), flush=True)
        async for msg in bus.read_stream(RESULTS, subject, follow=args.follow):
            try:
                event = events.from_nats(msg.headers, msg.data)
            except events.EventDecodeError:
                continue
            line = json.dumps(events.to_dict(event)) if args.output == "json" else None
            print(line or results.row(event), flush=True)
        return EXIT_OK

    return on_bus("results", url, show)


def _add_results(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("results", help="show trigger run results as a table")
    p.add_argument("--sensor", help="only this sensor's results")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new results")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table",
                   help="json: each result CloudEvent as one JSON line")  # fmt: skip
    p.add_argument("--nats-url", help="default: EVENTSVC_NATS_URL, else the embedded server "
                   "a local `eventsvc run` started (under EVENTSVC_DATA_DIR or .eventsvc), "
                   "else nats://127.0.0.1:4222")
    p.set_defaults(func=cmd_results)


def nats_url_of(args: argparse.Namespace) -> str:
    from eventsvc.bus.embedded import local_url

    return (
        args.nats_url
        or os.environ.get("EVENTSVC_NATS_URL")
        or local_url(os.environ.get("EVENTSVC_DATA_DIR", ".eventsvc"))
        or "nats://127.0.0.1:4222"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventsvc", description="Event automation for GitOps teams.",
        epilog="Exit codes: 0 ok, 1 findings or failures, 2 usage or configuration errors.",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"eventsvc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    p = sub.add_parser("lint", help="validate sensor and schedule files",
                       description="Check Sensor and Schedule files; every problem as "
                       "file:line: field: message. Exit 1 on findings, 2 when no YAML "
                       "file is found.")  # fmt: skip
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    p.add_argument("--output", "-o", choices=["text", "json"], default="text",
                   help="json: each problem as one JSON line (file, line, field, message, "
                   "severity)")  # fmt: skip
    p.set_defaults(func=cmd_lint)
    p = sub.add_parser("schema", help="print the Sensor JSON Schema")
    p.set_defaults(func=cmd_schema)
    p = sub.add_parser("send", help="publish a CloudEvent to the bus")
    p.add_argument("--type", required=True, help="CloudEvents type, e.g. com.example.image.pushed")
    p.add_argument("--source", required=True, help="CloudEvents source, e.g. https://ci.example")
    p.add_argument("--subject", help="CloudEvents subject")
    p.add_argument("--id", help="event id (default: a new UUID)")
    p.add_argument("--data", help="JSON data, or @file.json (other text is sent as text/plain)")
    p.add_argument("--nats-url", help="default: EVENTSVC_NATS_URL, else the embedded server "
                   "a local `eventsvc run` started (under EVENTSVC_DATA_DIR or .eventsvc), "
                   "else nats://127.0.0.1:4222")
    p.add_argument("--nats-subject", help="default events.cli.<type>")
    p.set_defaults(func=cmd_send)
    _add_test(sub)
    _add_results(sub)
    from eventsvc.github import commands as github_commands

    github_commands.add_parser(sub)
    from eventsvc.convert import commands as convert_commands

    convert_commands.add_parser(sub)
    from eventsvc.console import commands as console_commands

    console_commands.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure("auto", "warning")  # `run` reconfigures from its config
    func: Command = args.func
    try:
        return func(args)
    except ConfigError as e:
        print(f"eventsvc: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FINDINGS
    except BrokenPipeError:  # e.g. `eventsvc test ... | head`: the reader left, say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FINDINGS


if __name__ == "__main__":
    sys.exit(main())
