"""The delivery keys of a sensor: parsed into dataclasses, and every mistake reported
as `file:line: field: message`."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventsvc import loader
from eventsvc.sensors.model import ConcurrencyPolicy, RateLimit, RetryStrategy

GOOD = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: good}
spec:
  correlation: {window: 2h}
  dependencies:
    - name: build
      correlate: data.sha
    - name: pr
      correlate: data.pull_request.head.sha
  triggers:
    - template:
        name: deploy
        conditions: build && pr
        log: {message: deploy}
      retryStrategy: {steps: 4, duration: 500ms, factor: 3, jitter: 0.1, maxDuration: 10s}
      rateLimit: {requestsPerUnit: 10, unit: Minute}
      concurrency: {key: data.pull_request.number, policy: replace}
      dlqTrigger:
        template:
          name: alert
          log: {message: deploy failed}
"""

BAD = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: bad}
spec:
  correlation:
    window: 30d
    conditionsReset: ["0 25 * * *"]
  dependencies:
    - name: build
      correlate: pull_request.head.sha
  triggers:
    - template:
        name: deploy
        log: {message: deploy}
      retryStrategy:
        steps: 0
        duration: 2 seconds
        factor: 0.5
        jitter: 2
      rateLimit:
        requestsPerUnit: 0
        unit: Day
      concurrency:
        key: subject.x
        policy: newest
      dlqTrigger:
        template:
          name: alert
    - template:
        name: other
        log: {message: x}
      retryStrategy: {duration: 5s, maxDuration: 1s}
"""


def _load(tmp_path: Path, text: str) -> loader.Loaded:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return loader.load_paths([path])


def test_delivery_keys_are_parsed(tmp_path: Path) -> None:
    loaded = _load(tmp_path, GOOD)
    assert not loaded.problems
    (sensor,) = loaded.sensors
    assert sensor.correlation.window == 7200
    assert [d.correlate for d in sensor.dependencies] == ["data.sha", "data.pull_request.head.sha"]
    d = sensor.triggers[0].delivery
    assert d.retry == RetryStrategy(steps=4, duration=0.5, factor=3, jitter=0.1, max_duration=10)
    assert d.rate_limit == RateLimit(10, 60.0)
    assert d.concurrency is not None and d.concurrency.policy is ConcurrencyPolicy.REPLACE
    assert d.dlq is not None and (d.dlq.name, d.dlq.kind) == ("alert", "log")


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        (6, "spec.correlation.window", "7d limit"),
        (7, "spec.correlation.conditionsReset[0]", "5-field cron"),
        (10, "spec.dependencies[0].correlate", "data.pull_request.head.sha"),
        (16, "spec.triggers[0].retryStrategy.steps", "use 1 or more"),
        (17, "spec.triggers[0].retryStrategy.duration", "not a duration"),
        (18, "spec.triggers[0].retryStrategy.factor", "shrink"),
        (19, "spec.triggers[0].retryStrategy.jitter", "0..1"),
        (21, "spec.triggers[0].rateLimit.requestsPerUnit", "never fire"),
        (22, "spec.triggers[0].rateLimit.unit", "Second, Minute, Hour"),
        (24, "spec.triggers[0].concurrency.key", "has no fields"),
        (25, "spec.triggers[0].concurrency.policy", "queue, replace"),
        (27, "spec.triggers[0].dlqTrigger.template", "exactly one trigger kind"),
        (32, "spec.triggers[1].retryStrategy.maxDuration", "shorter than duration"),
    ],
)
def test_every_mistake_is_reported_with_its_line(
    tmp_path: Path, line: int, field: str, words: str
) -> None:
    problems = _load(tmp_path, BAD).problems
    found = [p for p in problems if p.field == field]
    assert found, f"no problem for {field}; got:\n" + "\n".join(map(str, problems))
    assert found[0].line == line
    assert words in found[0].message


def test_sample_sensors_still_lint_clean() -> None:
    loaded = loader.load_paths([Path(__file__).parents[2] / "sensors"])
    assert loaded.files and not loaded.problems
