"""Schedule specs and the pure time logic: no waiting, no bus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventsvc import loader, schedules, yamldoc
from eventsvc.schedules import Schedule, missed_ticks, next_fire

REPO = Path(__file__).resolve().parents[1]


def make(expr: str, tz: str = "UTC", **spec: Any) -> Schedule:
    lines = [
        "apiVersion: eventsvc.dev/v1alpha1",
        "kind: Schedule",
        "metadata: {name: job}",
        "spec:",
        f"  schedule: {expr!r}",
        f"  timezone: {tz}",
    ] + [f"  {key}: {value}" for key, value in spec.items()]
    docs, problems = yamldoc.parse_documents("\n".join(lines) + "\n", "job.yaml")
    assert not problems
    schedule, problems = schedules.parse_schedule(docs[0])
    assert not problems, [str(p) for p in problems]
    assert schedule is not None
    return schedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type, misc]


def fires(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    out = []
    for _ in range(count):
        after = next_fire(schedule, after)
        out.append(after)
    return [t.astimezone(UTC) for t in out]


# ---------------------------------------------------------------- cron forms


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/15 * * * *", utc(2026, 5, 4, 10, 7), [utc(2026, 5, 4, 10, 15),
                                                  utc(2026, 5, 4, 10, 30)]),
        ("0 9 * * 1-5", utc(2026, 5, 8, 12), [utc(2026, 5, 11, 9), utc(2026, 5, 12, 9)]),  # Fri
        ("0 0 1 */3 *", utc(2026, 2, 1), [utc(2026, 4, 1), utc(2026, 7, 1)]),
        ("*/10 * * * * *", utc(2026, 5, 4, 10, 0, 5), [utc(2026, 5, 4, 10, 0, 10),
                                                       utc(2026, 5, 4, 10, 0, 20)]),
        ("30 0 12 * * *", utc(2026, 5, 4, 12), [utc(2026, 5, 4, 12, 0, 30),
                                                utc(2026, 5, 5, 12, 0, 30)]),
        ("@hourly", utc(2026, 5, 4, 10, 0), [utc(2026, 5, 4, 11), utc(2026, 5, 4, 12)]),
        ("@daily", utc(2026, 5, 4, 10), [utc(2026, 5, 5), utc(2026, 5, 6)]),
        ("@weekly", utc(2026, 5, 4), [utc(2026, 5, 10), utc(2026, 5, 17)]),  # Sundays
        ("@monthly", utc(2026, 5, 4), [utc(2026, 6, 1), utc(2026, 7, 1)]),
        ("@yearly", utc(2026, 5, 4), [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@every 10m", utc(2026, 5, 4, 10, 3, 7), [utc(2026, 5, 4, 10, 10),
                                                   utc(2026, 5, 4, 10, 20)]),
        ("@every 1s", utc(2026, 5, 4, 10, 0, 0), [utc(2026, 5, 4, 10, 0, 1),
                                                  utc(2026, 5, 4, 10, 0, 2)]),
        ("@every 1h30m", utc(2026, 5, 4, 10), [utc(2026, 5, 4, 10, 30), utc(2026, 5, 4, 12)]),
    ],
)  # fmt: skip
def test_cron_forms(expr: str, after: datetime, expected: list[datetime]) -> None:
    assert fires(make(expr), after, len(expected)) == expected


def test_next_fire_is_strictly_after_and_in_the_schedule_zone() -> None:
    schedule = make("0 3 * * *", "Europe/Berlin")
    first = next_fire(schedule, utc(2026, 5, 4, 1))  # 03:00 CEST is 01:00Z
    assert first == utc(2026, 5, 5, 1)
    assert first.tzinfo == schedule.tz
    assert next_fire(schedule, first - timedelta(microseconds=1)) == first


def test_next_fire_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_fire(make("@daily"), datetime(2026, 5, 4))


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("Asia/Tokyo", utc(2026, 5, 5, 0)),  # 09:00 JST
        ("America/Los_Angeles", utc(2026, 5, 4, 16)),  # 09:00 PDT
        ("Asia/Kolkata", utc(2026, 5, 5, 3, 30)),  # 09:00 IST (+05:30)
    ],
)
def test_timezones(tz: str, expected: datetime) -> None:
    assert fires(make("0 9 * * *", tz), utc(2026, 5, 4, 12), 1) == [expected]


# ---------------------------------------------------------------- daylight saving


def test_spring_forward_fires_once_right_after_the_gap() -> None:
    # America/New_York 2026-03-08: 02:00 EST -> 03:00 EDT; 02:30 does not exist
    assert fires(make("30 2 * * *", "America/New_York"), utc(2026, 3, 7, 12), 3) == [
        utc(2026, 3, 8, 7, 0),  # 03:00 EDT, once
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
        utc(2026, 3, 10, 6, 30),
    ]


def test_spring_forward_with_seconds_field_behaves_the_same() -> None:
    assert fires(make("0 30 2 * * *", "America/New_York"), utc(2026, 3, 7, 12), 2) == [
        utc(2026, 3, 8, 7, 0),
        utc(2026, 3, 9, 6, 30),
    ]


def test_fall_back_fires_once_at_the_first_occurrence() -> None:
    # America/New_York 2026-11-01: 02:00 EDT -> 01:00 EST; 01:30 happens twice
    job = make("30 1 * * *", "America/New_York")
    assert fires(job, utc(2026, 10, 31, 12), 3) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT only; not 06:30Z (01:30 EST)
        utc(2026, 11, 2, 6, 30),
        utc(2026, 11, 3, 6, 30),
    ]
    # started inside the repeated hour after the first 01:30: nothing more that day
    assert next_fire(job, utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 2, 6, 30)


def test_europe_berlin_transitions() -> None:
    job = make("30 2 * * *", "Europe/Berlin")
    # 2026-03-29: 02:00 CET -> 03:00 CEST
    assert fires(job, utc(2026, 3, 28, 12), 2) == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    # 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 CEST (00:30Z) only
    assert fires(job, utc(2026, 10, 24, 12), 2) == [utc(2026, 10, 25, 0, 30),
                                                    utc(2026, 10, 26, 1, 30)]  # fmt: skip


def test_interval_jobs_follow_real_time_across_transitions() -> None:
    ny = "America/New_York"
    # the repeated hour is two real hours: both fire
    assert fires(make("*/30 1 * * *", ny), utc(2026, 11, 1, 4), 4) == [
        utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6, 0), utc(2026, 11, 1, 6, 30),
    ]  # fmt: skip
    # the skipped hour has no instants: nothing fires on that day
    assert fires(make("*/30 2 * * *", ny), utc(2026, 3, 7, 12), 1) == [utc(2026, 3, 9, 6, 0)]
    # @every counts elapsed time; local clocks do not matter
    assert fires(make("@every 1h", ny), utc(2026, 3, 8, 6, 30), 2) == [
        utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)
    ]  # fmt: skip


# ---------------------------------------------------------------- exclusions, jitter


def test_exclusion_dates_are_local_dates() -> None:
    job = make("0 3 * * *", "Europe/Berlin", exclusionDates="[2026-05-05, '2026-05-06']")
    assert fires(job, utc(2026, 5, 4, 12), 2) == [utc(2026, 5, 7, 1), utc(2026, 5, 8, 1)]


def test_exclusion_skips_a_whole_local_day_of_frequent_ticks() -> None:
    # 23:30 UTC on the 4th is already the 5th in Berlin
    job = make("@every 30m", "Europe/Berlin", exclusionDates="['2026-05-05']")
    assert fires(job, utc(2026, 5, 4, 21, 15), 2) == [utc(2026, 5, 4, 21, 30),
                                                      utc(2026, 5, 5, 22, 0)]  # fmt: skip


def test_jitter_is_deterministic_and_bounded() -> None:
    job = make("@every 1m", jitter="30s")
    instants = fires(job, utc(2026, 5, 4), 20)
    offsets = [(schedules.fire_at(job, t) - t).total_seconds() for t in instants]
    assert all(0 <= o < 30 for o in offsets)
    assert len(set(offsets)) > 1
    assert offsets == [(schedules.fire_at(job, t) - t).total_seconds() for t in instants]
    assert schedules.fire_at(make("@every 1m"), instants[0]) == instants[0]


# ---------------------------------------------------------------- catch-up


@pytest.mark.parametrize(
    ("policy", "expected_minutes"),
    [("none", []), ("last", [3]), ("all", [1, 2, 3])],
)
def test_missed_ticks_per_policy(policy: str, expected_minutes: list[int]) -> None:
    job = make("* * * * *", catchup=f"{{policy: {policy}, maxDuration: 1h}}")
    t0 = utc(2026, 5, 4, 10)
    got = missed_ticks(job, last=t0, now=t0 + timedelta(minutes=3, seconds=30))
    assert got == [t0 + timedelta(minutes=m) for m in expected_minutes]


def test_missed_ticks_only_within_max_duration() -> None:
    job = make("* * * * *", catchup="{policy: all, maxDuration: 2m30s}")
    t0 = utc(2026, 5, 4, 10)
    got = missed_ticks(job, last=t0, now=t0 + timedelta(minutes=10))
    assert got == [t0 + timedelta(minutes=m) for m in (8, 9, 10)]


def test_missed_ticks_all_is_capped() -> None:
    job = make("@every 1s", catchup="{policy: all, maxDuration: 24h}")
    t0 = utc(2026, 5, 4)
    got = missed_ticks(job, last=t0, now=t0 + timedelta(hours=1))
    assert len(got) == schedules.MAX_CATCHUP_TICKS
    assert got[-1] == t0 + timedelta(hours=1)


def test_catchup_defaults_to_none() -> None:
    job = make("* * * * *")
    assert job.catchup is schedules.CatchupPolicy.NONE
    assert missed_ticks(job, utc(2026, 5, 4), utc(2026, 5, 5)) == []


# ---------------------------------------------------------------- spec files


BAD = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Schedule
metadata:
  name: Bad_Name
spec:
  schedule: "61 * * * *"
  timezone: Europe/Berln
  exclusionDates: ["2026-02-30", 17]
  jitter: 5q
  catchup:
    policy: sometimes
    maxDuration: soon
  colour: blue
"""


def test_invalid_schedule_file_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    loaded = loader.load_paths([tmp_path])
    got = [str(p) for p in loaded.problems]
    f = str(path)
    expected_prefixes = [
        f"{f}:4: metadata.name: 'Bad_Name'",
        f"{f}:6: spec.schedule: '61 * * * *' is not a valid cron expression",
        f"{f}:7: spec.timezone: 'Europe/Berln' is not an IANA time zone; did you mean "
        "'Europe/Berlin'",
        f"{f}:8: spec.exclusionDates[0]: '2026-02-30' is not a date",
        f"{f}:8: spec.exclusionDates[1]: 17 is not a date",
        f"{f}:9: spec.jitter: '5q' is not a duration",
        f"{f}:11: spec.catchup.policy: 'sometimes' is not one of: none, last, all",
        f"{f}:12: spec.catchup.maxDuration: 'soon' is not a duration",
        f"{f}:13: spec.colour: unknown field",
    ]
    for prefix in expected_prefixes:
        assert any(line.startswith(prefix) for line in got), (prefix, got)
    assert len(got) == len(expected_prefixes)
    assert "Schedule" not in loaded.by_kind


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * *", "'* * *' has 3 fields"),
        ("@often", "'@often' is not a known macro"),
        ("@every 500ms", "'@every 500ms': the interval must be at least 1s"),
        ("@every soon", "'soon' is not a duration"),
        ("0 0 30 2 *", "'0 0 30 2 *' is not a valid cron expression (Bad day-of-month field)"),
        ("0 25 * * *", "'0 25 * * *' is not a valid cron expression (Bad hour field)"),
    ],
)
def test_bad_expressions_are_quoted(expr: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        schedules.parse_expression(expr)
    assert message in str(e.value)


def test_duplicate_schedule_names(tmp_path: Path) -> None:
    doc = "apiVersion: eventsvc.dev/v1alpha1\nkind: Schedule\nmetadata: {name: a}\n" \
          "spec: {schedule: '@daily'}\n"  # fmt: skip
    (tmp_path / "one.yaml").write_text(doc)
    (tmp_path / "two.yaml").write_text(doc)
    found, problems = schedules.load_schedules([tmp_path])
    assert [s.name for s in found] == ["a"]
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'two.yaml'}:3: metadata.name: Schedule 'a' is already declared in "
        f"{tmp_path / 'one.yaml'}:3"
    ]


def test_example_schedules_are_valid() -> None:
    loaded = loader.load_paths([REPO / "sensors"])
    assert [str(p) for p in loaded.problems] == []
    nightly = next(s for s in loaded.by_kind["Schedule"] if s.name == "nightly-cleanup")
    assert nightly.timezone == "Europe/Berlin"
    assert nightly.catchup is schedules.CatchupPolicy.LAST
    assert any(s.name == "nightly-cleanup" for s in loaded.sensors)


@pytest.mark.parametrize(("expr", "jitter", "gap"), [
    ("* * * * *", "2h", "60s"),
    ("@every 10m", "10m", "10m"),
    ("0 9,17 * * *", "9h", "8h"),
    ("*/10 * * * *", "30s", None),
])  # fmt: skip
def test_jitter_must_be_shorter_than_the_gap_between_ticks(
    tmp_path: Path, expr: str, jitter: str, gap: str | None
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("apiVersion: eventsvc.dev/v1alpha1\nkind: Schedule\nmetadata: {name: s}\n"
                    f"spec:\n  schedule: '{expr}'\n  jitter: {jitter}\n")  # fmt: skip
    problems = [str(p) for p in loader.load_paths([path]).problems]
    assert problems == ([] if gap is None else [
        f"{path}:6: spec.jitter: {jitter} is not shorter than the {gap} between ticks: ticks "
        f"would overlap and arrive out of order; use less than {gap}"
    ])  # fmt: skip
