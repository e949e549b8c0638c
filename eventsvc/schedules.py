"""`kind: Schedule` specs and the pure time logic of the cron gateway.

Nothing here sleeps or talks to the bus: `next_fire`, `fire_at` and `missed_ticks`
take the current time as an argument, so they are tested without waiting.

Cron expressions are parsed and evaluated by `cronsim`, which follows Debian
cron (Vixie cron) and documents its behaviour across daylight-saving changes.

Daylight saving (in the schedule's `timezone`):

- Expressions with a fixed minute and hour (`30 2 * * *`, `0 30 2 * * 1-5`) are
  wall-clock jobs. On a spring-forward day a time inside the skipped hour fires
  once, at the first whole minute after the gap (02:30 -> 03:00). On a fall-back
  day a time inside the repeated hour fires once, at its first occurrence (01:30
  daylight time, not again at 01:30 standard time).
- Expressions whose minute or hour starts with `*` (`*/15 * * * *`, `@hourly`)
  are interval jobs: they fire at every real instant that matches, so none fire
  inside a skipped hour and the repeated hour fires twice, once per real hour.
- `@every <duration>` counts real elapsed time from the Unix epoch, so every
  replica derives the same instants (`@every 10m` fires at :00, :10, :20 UTC).
"""

from __future__ import annotations

import collections
import difflib
import functools
import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from eventsvc import yamldoc
from eventsvc.durations import format_duration, parse_duration
from eventsvc.errors import EventsvcError, SpecProblem

KIND = "Schedule"
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MIN_EVERY = 1.0  # seconds
MAX_CATCHUP_TICKS = 1000  # policy `all` emits at most this many (the newest)
CRON_HINT = (
    "write 5 fields (minute hour day-of-month month day-of-week), optionally with a "
    "leading seconds field, or one of " + ", ".join(MACROS) + ", or '@every 10m'"
)
_DURATION: dict[str, Any] = {"type": ["string", "number"]}
SCHEMA: dict[str, Any] = yamldoc.document_schema(KIND, {
    "type": "object",
    "additionalProperties": False,
    "required": ["schedule"],
    "properties": {
        "schedule": {"type": "string"},
        "timezone": {"type": "string"},
        "exclusionDates": {"type": "array"},  # items checked below: YAML dates or strings
        "data": {},
        "jitter": _DURATION,
        "catchup": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "policy": {"enum": ["none", "last", "all"]},
                "maxDuration": _DURATION,
            },
        },
    },
})


class CatchupPolicy(StrEnum):
    NONE = "none"  # ticks missed while down are dropped
    LAST = "last"  # only the newest missed tick is emitted
    ALL = "all"  # every missed tick is emitted, oldest first


class NoNextFire(EventsvcError):
    """The expression matches no instant in the next 50 years (e.g. `0 0 31 2 *`)."""


@dataclass(frozen=True, slots=True, eq=False)
class Schedule:
    name: str
    file: str
    expression: str  # as written
    cron: str | None  # normalised cron expression (macros expanded), or None for @every
    every: float | None  # seconds, for `@every`
    timezone: str
    tz: ZoneInfo
    exclusion_dates: frozenset[date]
    data: Any
    jitter: float
    catchup: CatchupPolicy
    max_catchup: float  # seconds
    raw: Mapping[str, Any]

    @property
    def wall_clock(self) -> bool:
        """A fixed minute and hour: DST gaps and repeats are handled like Debian cron."""
        if self.cron is None:
            return False
        fields = self.cron.split()
        return not fields[-5].startswith("*") and not fields[-4].startswith("*")

    def same_as(self, other: Schedule) -> bool:
        return self.raw == other.raw


# ---------------------------------------------------------------- time logic


def next_fire(schedule: Schedule, after: datetime) -> datetime:
    """The first scheduled instant strictly after `after`, aware, in the schedule's timezone.

    Skips instants whose local date is in `exclusionDates`; raises `NoNextFire` when the
    expression never matches again.
    """
    if after.tzinfo is None:
        raise ValueError("next_fire needs an aware datetime for 'after'")
    current = after
    while True:
        candidate = _next_raw(schedule, current)
        day = candidate.astimezone(schedule.tz).date()
        if day not in schedule.exclusion_dates:
            return candidate
        # jump to (just before) the next local midnight; every excluded day is passed once
        midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), schedule.tz)
        current = max(candidate, midnight - timedelta(seconds=1), key=_ts)


def _next_raw(schedule: Schedule, after: datetime) -> datetime:
    if schedule.every is not None:
        step = schedule.every
        k = math.floor(after.timestamp() / step) + 1
        return datetime.fromtimestamp(k * step, tz=schedule.tz)
    assert schedule.cron is not None
    local = after.astimezone(schedule.tz)
    try:
        if not schedule.wall_clock:
            # interval jobs: cronsim steps through real instants in the zone
            for candidate in CronSim(schedule.cron, local):
                if _ts(candidate) > _ts(after):
                    return candidate
        else:
            # wall-clock jobs: match local wall time, then place it on the timeline
            for naive in CronSim(schedule.cron, local.replace(tzinfo=None)):
                candidate = _place(naive, schedule.tz)
                if _ts(candidate) > _ts(after):
                    return candidate
    except StopIteration:
        pass
    raise NoNextFire(f"schedule {schedule.name!r}: {schedule.expression!r} never fires again")


def _ts(dt: datetime) -> float:
    # aware datetimes sharing a tzinfo compare by wall time, ignoring `fold`: compare instants
    return dt.timestamp()


def _exists(dt: datetime) -> bool:
    return dt.astimezone(UTC).astimezone(dt.tzinfo).replace(tzinfo=None) == dt.replace(
        tzinfo=None
    )


def _place(naive: datetime, tz: ZoneInfo) -> datetime:
    """Wall time -> instant: the first occurrence when repeated, the first minute after a gap."""
    aware = naive.replace(tzinfo=tz, fold=0)
    if _exists(aware):
        return aware
    aware = aware.replace(second=0)
    while not _exists(aware):
        aware += timedelta(minutes=1)  # wall-clock arithmetic: steps through the gap
    return aware


def fire_at(schedule: Schedule, instant: datetime) -> datetime:
    """When to publish the tick for `instant`: plus a jitter that every replica agrees on."""
    if not schedule.jitter:
        return instant
    digest = hashlib.blake2b(
        f"{schedule.name}:{instant.timestamp()}".encode(), digest_size=8
    ).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    return instant + timedelta(seconds=schedule.jitter * fraction)


def missed_ticks(schedule: Schedule, last: datetime, now: datetime) -> list[datetime]:
    """Ticks after `last` and up to `now` to emit late, per the schedule's catch-up policy.

    Only ticks within `maxDuration` before `now` count; `all` keeps the newest
    `MAX_CATCHUP_TICKS`, oldest first.
    """
    if schedule.catchup is CatchupPolicy.NONE:
        return []
    horizon = now - timedelta(seconds=schedule.max_catchup)
    after = max(last, horizon - timedelta(microseconds=1), key=_ts)
    keep = 1 if schedule.catchup is CatchupPolicy.LAST else MAX_CATCHUP_TICKS
    ticks: collections.deque[datetime] = collections.deque(maxlen=keep)
    try:
        tick = next_fire(schedule, after)
        while _ts(tick) <= _ts(now):
            ticks.append(tick)
            tick = next_fire(schedule, tick)
    except NoNextFire:
        pass
    return list(ticks)


# ---------------------------------------------------------------- spec parsing


def parse_schedule(doc: yamldoc.Document) -> tuple[Schedule | None, list[SpecProblem]]:
    problems = yamldoc.validate_schema(doc, SCHEMA)
    spec = doc.value.get("spec") if isinstance(doc.value, dict) else None
    checked: dict[str, Any] = {}
    if isinstance(spec, dict):
        problems += _check_spec(doc, spec, checked)
    if problems:
        return None, sorted(set(problems), key=lambda p: (p.line, p.field))
    assert isinstance(spec, dict)
    catchup = spec.get("catchup") or {}
    return Schedule(
        name=doc.value["metadata"]["name"],
        file=doc.file,
        expression=spec["schedule"],
        cron=checked.get("cron"),
        every=checked.get("every"),
        timezone=checked["timezone"],
        tz=checked["tz"],
        exclusion_dates=frozenset(checked["exclusion_dates"]),
        data=spec.get("data"),
        jitter=checked.get("jitter", 0.0),
        catchup=CatchupPolicy(catchup.get("policy", "none")),
        max_catchup=checked.get("max_catchup", 3600.0),
        raw=doc.value,
    ), []


def _check_spec(
    doc: yamldoc.Document, spec: Mapping[str, Any], out: dict[str, Any]
) -> list[SpecProblem]:
    """Meaning the schema cannot check; fills `out` with parsed values."""
    problems: list[SpecProblem] = []
    base: yamldoc.FieldPath = ("spec",)
    if isinstance(spec.get("schedule"), str):
        try:
            out["cron"], out["every"] = parse_expression(spec["schedule"])
        except ValueError as e:
            problems.append(doc.problem((*base, "schedule"), str(e)))
    tz_name = spec.get("timezone", "UTC")
    if isinstance(tz_name, str):
        try:
            out["tz"], out["timezone"] = zone(tz_name), tz_name
        except ValueError as e:
            problems.append(doc.problem((*base, "timezone"), str(e)))
    out["exclusion_dates"] = []
    dates = spec.get("exclusionDates")
    for i, item in enumerate(dates if isinstance(dates, list) else []):
        try:
            out["exclusion_dates"].append(_date(item))
        except ValueError as e:
            problems.append(doc.problem((*base, "exclusionDates", i), str(e)))
    catchup = spec.get("catchup") if isinstance(spec.get("catchup"), dict) else {}
    assert isinstance(catchup, dict)
    for path, key, value in (
        ((*base, "jitter"), "jitter", spec.get("jitter")),
        ((*base, "catchup", "maxDuration"), "max_catchup", catchup.get("maxDuration")),
    ):
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                out[key] = parse_duration(value)
            except ValueError as e:
                problems.append(doc.problem(path, str(e)))
    gap = _shortest_gap(out.get("cron"), out.get("every"))
    if out.get("jitter") and gap is not None and out["jitter"] >= gap:
        problems.append(doc.problem((*base, "jitter"), (
            f"{format_duration(out['jitter'])} is not shorter than the "
            f"{format_duration(gap)} between ticks: ticks would overlap and arrive out of "
            f"order; use less than {format_duration(gap)}"
        )))  # fmt: skip
    return problems


def _shortest_gap(cron: str | None, every: float | None) -> float | None:
    """The shortest time between two ticks, over the first 50 ticks of 2026 on."""
    if every is not None:
        return every
    if cron is None:
        return None
    fires = []
    for t in CronSim(cron, datetime(2026, 1, 1)):
        fires.append(t)
        if len(fires) == 50:
            break
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fires)]
    return min(gaps) if gaps else None


def parse_expression(text: str) -> tuple[str | None, float | None]:
    """(cron expression, None) or (None, interval seconds); ValueError quoting `text`."""
    expr = " ".join(text.split())
    if expr.lower().startswith("@every"):
        arg = expr[len("@every") :].strip()
        try:
            seconds = parse_duration(arg)
        except ValueError as e:
            raise ValueError(f"{text!r}: {e}") from e
        if seconds < MIN_EVERY:
            raise ValueError(
                f"{text!r}: the interval must be at least {format_duration(MIN_EVERY)}"
            )
        return None, seconds
    cron = MACROS.get(expr.lower(), expr)
    if cron.startswith("@"):
        raise ValueError(f"{text!r} is not a known macro; {CRON_HINT}")
    if len(cron.split()) not in (5, 6):
        raise ValueError(f"{text!r} has {len(cron.split())} fields; {CRON_HINT}")
    try:
        next(CronSim(cron, datetime(2000, 1, 1)))
    except CronSimError as e:
        raise ValueError(f"{text!r} is not a valid cron expression ({e} field); {CRON_HINT}") from e
    except StopIteration as e:
        raise ValueError(f"{text!r} never matches a date; check day-of-month and month") from e
    return cron, None


@functools.cache
def _zone_names() -> list[str]:
    return sorted(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ValueError quoting it, with the closest known names."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, _zone_names(), n=2)
        hint = f"did you mean {' or '.join(map(repr, close))}?" if close else (
            "use an IANA name such as 'Europe/Berlin', 'America/New_York' or 'UTC'"
        )
        raise ValueError(f"{name!r} is not an IANA time zone; {hint}") from None


def _date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    reason = ""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError as e:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
                reason = f" ({e})"  # the right shape, an impossible day: say which part
    raise ValueError(
        f"{value!r} is not a date{reason}; write it as YYYY-MM-DD, e.g. 2026-12-24"
    )


# ---------------------------------------------------------------- files


def load_schedules(paths: Sequence[str | Path]) -> tuple[list[Schedule], list[SpecProblem]]:
    """Every Schedule under `paths`, and the problems of Schedule documents and YAML syntax."""
    return yamldoc.load_kind(paths, KIND, parse_schedule)
