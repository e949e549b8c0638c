"""`eventsvc convert ...` subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eventsvc.convert import argo

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("convert", help="convert other tools' manifests to eventsvc files")
    csub = p.add_subparsers(dest="convert_command", required=True, metavar="FORMAT")
    a = csub.add_parser(
        "argo-events",
        help="Argo Events Sensors and EventSources -> eventsvc Sensors and Schedules",
        description="Convert Argo Events Sensor and EventSource manifests (files or "
        "directories, multi-document YAML). Sensors and calendar Schedules are written to "
        "DIR; the setup of GitHub, webhook and NATS event sources is printed. What cannot be "
        "converted is a '# eventsvc: not converted' comment in the output and a "
        "file:line: field: why line on stderr. Exit 0 all converted, 1 something was not, "
        "2 usage.",
    )
    a.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    a.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write to")
    a.set_defaults(func=cmd_argo_events)


def cmd_argo_events(args: argparse.Namespace) -> int:
    result = argo.convert_paths(args.paths)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    if not result.manifests:
        print("eventsvc convert argo-events: no Argo Events Sensor or EventSource found "
              f"(apiVersion {argo.API_GROUP}v1alpha1) in {' '.join(args.paths)}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in result.files.items():
            (out_dir / name).write_text(text)
    except OSError as e:
        print(f"eventsvc convert argo-events: cannot write to {out_dir}: {e}", file=sys.stderr)
        return EXIT_USAGE
    for name in result.files:
        print(f"wrote {out_dir / name}")
    if result.instructions:
        print("\nSet up the event sources:")
        for line in result.instructions:
            print(line)
    for finding in result.findings:
        print(finding, file=sys.stderr)
    lint = argo.lint_outputs(out_dir, list(result.files))
    for problem in lint:
        print(f"converted output does not lint: {problem}", file=sys.stderr)
    failed = result.findings or result.problems or lint
    summary = (f"{result.manifests} manifest(s), {len(result.files)} file(s) written, "
               f"{len(result.findings)} not converted")  # fmt: skip
    print(summary, file=sys.stderr)
    return EXIT_FINDINGS if failed else EXIT_OK
