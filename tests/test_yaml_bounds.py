"""Hostile YAML is bounded: aliases, nesting and size are limited; each crossing is one
`file:line: field: message` problem naming the limit and the fix, quickly, never a traceback;
hot reload judges files in a thread, off the event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from eventsvc import loader, yamldoc
from eventsvc.sensors.reload import SensorReloader
from tests.conftest import log_sensor

REPO = Path(__file__).resolve().parents[1]
LOL = "[" + ", ".join(['"lol"'] * 9) + "]"
# the classic billion laughs: 9 ** 9 strings from a few hundred bytes
BOMB = f"a: &a {LOL}\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n"
    for i in range(8)
)

CASES = [
    (BOMB, 5, "aliases expand to more than 10000 values in one file (at *d); write the values "
              "out or use fewer aliases"),
    ("x: " + "[" * 20_000 + "]" * 20_000, 1, "nested more than 100 levels deep; flatten"),
    ("x: " + "{a: " * 20_000 + "1" + "}" * 20_000, 1, "nested more than 100 levels deep"),
    ("".join(" " * i + f"k{i}:\n" for i in range(1000)) + " " * 1000 + "v", 101,
     "nested more than 100 levels deep; flatten the structure"),
    ("a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 50 + "*a" + "]" * 50, 2,
     "nested more than 100 levels deep once *a is expanded; flatten the structure"),
    ("a: &a [1, *a]\n", 1, "alias *a refers to a value that contains it; remove the recursive"),
    ("a: &a {b: *a}\n", 1, "alias *a refers to a value that contains it"),
    ("a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n", 2,
     "more than 100 aliases (*name) in one file; write the values out instead of aliasing"),
    ("a: &a 1\n" + "---\nb: [" + ", ".join(["*a"] * 60) + "]\n", 3, "found undefined alias"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "message"), CASES)
def test_hostile_yaml_is_one_problem_quickly(text: str, line: int, message: str) -> None:
    started = time.perf_counter()
    _, problems = yamldoc.parse_documents(text, "s.yaml")
    assert time.perf_counter() - started < 1.0
    assert len(problems) == 1, problems
    assert str(problems[0]).startswith(f"s.yaml:{line}: (yaml): {message}")


def test_aliases_within_the_limits_still_load() -> None:
    text = "a: &a {x: 1}\nb: *a\nc: [*a, *a]\n---\nd: &d [1, 2]\ne: *d\n"
    docs, problems = yamldoc.parse_documents(text, "s.yaml")
    assert problems == []
    assert [d.value for d in docs] == [
        {"a": {"x": 1}, "b": {"x": 1}, "c": [{"x": 1}, {"x": 1}]},
        {"d": [1, 2], "e": [1, 2]},
    ]
    nested = "x: " + "[" * 99 + "]" * 99  # 100 levels with the mapping: just allowed
    assert yamldoc.parse_documents(nested, "s.yaml")[1] == []


def test_the_alias_budget_is_per_file_not_per_document() -> None:
    doc = "a: &a " + LOL + "\nb: [" + ", ".join(["*a"] * 50) + "]\n"
    _, problems = yamldoc.parse_documents("---\n".join([doc] * 3), "s.yaml")
    assert [p.message.split(";")[0] for p in problems] == [
        "more than 100 aliases (*name) in one file"
    ]


def test_a_file_over_1_mib_is_refused_unparsed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    docs, problems = yamldoc.read_documents(big)
    assert docs == []
    assert [str(p) for p in problems] == [
        f"{big}:1: (file): 2.0 MiB is larger than the 1 MiB limit for a spec file; "
        "split it into several files"
    ]
    assert yamldoc.parse_documents("a: " + "x" * yamldoc.MAX_FILE_BYTES, "s.yaml")[1][0].field \
        == "(file)"  # fmt: skip


@pytest.mark.parametrize("text", [BOMB, "x: " + "[" * 20_000 + "]" * 20_000])
def test_lint_prints_the_limit_not_a_traceback(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "eventsvc", "lint", str(bad)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert time.perf_counter() - started < 10
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout.startswith(f"{bad}:")
    assert ": (yaml): " in result.stdout


class _Engine:
    def __init__(self) -> None:
        self.applied: list[list[Any]] = []

    async def apply(self, sensors: list[Any]) -> None:
        self.applied.append(sensors)


async def test_reload_judges_files_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "s.yaml").write_text(log_sensor("s"))
    real = loader.load_paths

    def slow(paths: Any) -> loader.Loaded:
        time.sleep(0.5)  # a big file, a slow disk
        return real(paths)

    monkeypatch.setattr(loader, "load_paths", slow)
    engine = _Engine()
    reloader = SensorReloader(engine, tmp_path)  # type: ignore[arg-type]
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        assert await reloader.check()
    finally:
        ticker.cancel()
    assert ticks >= 10  # the loop kept running while the file was read
    assert [[s.name for s in sensors] for sensors in engine.applied] == [["s"]]


async def test_reload_rejects_a_bomb_and_keeps_running(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(log_sensor("s"))
    reloader = SensorReloader(_Engine(), tmp_path)  # type: ignore[arg-type]
    await reloader.check()
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    started = time.perf_counter()
    assert await reloader.check()
    assert time.perf_counter() - started < 1.0
    assert [p.field for p in reloader.problems[bomb]] == ["(yaml)"]
    assert sorted(s.name for s in reloader._wanted()) == ["s"]
