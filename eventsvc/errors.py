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
