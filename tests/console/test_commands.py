"""`eventsvc dlq list|replay|discard`, `eventsvc events` and `eventsvc results -o json`
against a running service's NATS."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from eventsvc import cli
from tests.conftest import RunningService
from tests.console.conftest import eventually, send_pr, send_thing


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[Any]]:
    """Exit code and the JSON lines printed (the CLI runs its own loop: in a thread)."""
    code = await asyncio.to_thread(cli.main, list(argv))
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def test_dlq_list_replay_discard_and_events(
    console_service: RunningService, receiver: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = console_service.service.state.nats_url
    assert url is not None
    first = await send_thing(console_service)

    async def letters() -> list[Any]:
        code, items = await run_cli(capsys, "dlq", "list", "-o", "json", "--nats-url", url)
        assert code == 0
        return items

    (letter,) = await eventually(letters, "a dead letter")
    assert letter["event"]["id"] == first and letter["sensor"] == "flaky"
    code, (replayed,) = await run_cli(capsys, "dlq", "replay", str(letter["seq"]), "-o", "json",
                                      "--nats-url", url)  # fmt: skip
    assert code == 0 and replayed["seq"] == letter["seq"]
    got = await receiver.wait_for(1)
    assert got[0]["replayof"] == first
    code, (gone,) = await run_cli(capsys, "dlq", "discard", "12345", "-o", "json",
                                  "--nats-url", url)  # fmt: skip
    assert code == 1 and gone == {"seq": 12345, "discarded": False}
    code, _ = await run_cli(capsys, "dlq", "replay", "--nats-url", url)
    assert code == 2

    async with aiohttp.ClientSession() as session:
        pr = await send_pr(session, console_service.url)
    code, found = await run_cli(capsys, "events", "--type", "pull_request", "-o", "json",
                                "--nats-url", url)  # fmt: skip
    assert code == 0 and [e["id"] for e in found] == [pr]

    async def pr_results() -> list[Any]:
        _, items = await run_cli(capsys, "results", "--sensor", "pr-main", "-o", "json",
                                    "--nats-url", url)  # fmt: skip
        return items

    (result,) = await eventually(pr_results, "the PR's result")
    assert result["data"]["eventIds"] == [pr] and result["data"]["outcome"] == "success"


def test_lint_output_json(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: eventsvc.dev/v1alpha1\nkind: Sensor\nmetadata: {name: x}\n"
                   "spec: {}\n")  # fmt: skip
    assert cli.main(["lint", "-o", "json", str(bad)]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(p["line"], p["field"], p["message"]) for p in lines} == {
        (4, "spec.dependencies", "required"), (4, "spec.triggers", "required")}
