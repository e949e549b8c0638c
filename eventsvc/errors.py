"""Errors, classified by how they are handled (not by where they come from)."""

from __future__ import annotations

from dataclasses import dataclass


class EventsvcError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One finding in a spec file: where it is, which field, what to do."""

    file: str
    line: int
    field: str
    message: str
    severity: str = "error"  # "warning": printed by lint, does not stop the file loading

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class SpecError(EventsvcError):
    """A spec file (sensor, schedule, config) is invalid; carries every problem found."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigError(EventsvcError):
    """The service configuration is unusable; the message names the setting and the fix."""


class BusError(EventsvcError):
    """The bus failed for a reason that retrying will not fix by itself."""


class BusUnavailableError(BusError):
    """The bus cannot be reached right now; the caller may retry later."""


class ClaimGoneError(BusError):
    """A message's body was stored apart (too large for a message) and is no longer there."""


class TriggerError(EventsvcError):
    """A trigger run failed."""


class PermanentTriggerError(TriggerError):
    """Retrying will not help: bad spec, missing permission, missing key."""


class TemporaryTriggerError(TriggerError):
    """Worth retrying, optionally not before `delay` seconds."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ExternalError(EventsvcError):
    """A client of an outside system (GitHub's API, git, the Kubernetes API) failed, or
    refused a value before sending it. Those clients serve triggers, commands and gateways
    alike and know nothing of runs: `retryable` says whether the same call may succeed
    later (not before `delay` seconds), and the trigger boundary maps it
    (`as_trigger_error`)."""

    retryable: bool = False

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class RetryableExternalError(ExternalError):
    """The outside system may answer differently later: a timeout, a 5xx, a rate limit."""

    retryable = True


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` in seconds (ASCII digits only: `²` is not a number), else None.
    An HTTP date is not followed: the trigger's own backoff applies."""
    return float(value) if value and value.isascii() and value.isdigit() else None


class RefusedValueError(ExternalError):
    """A value (from a spec or from event data) was refused before it reached the outside
    system: it would have been an option, a path segment or a name it must not be."""


def as_trigger_error(error: EventsvcError) -> EventsvcError:
    """What a trigger run makes of `error`: an `ExternalError` becomes temporary (retried)
    or permanent by its `retryable`, with the same message; other errors stay as they are."""
    if not isinstance(error, ExternalError):
        return error
    mapped: TriggerError = (TemporaryTriggerError(str(error), delay=error.delay)
                            if error.retryable else PermanentTriggerError(str(error)))  # fmt: skip
    mapped.__cause__ = error
    return mapped
