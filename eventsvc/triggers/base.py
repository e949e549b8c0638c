"""What every trigger kind implements, and what the engine hands it.

A trigger kind is one module with one class following `TriggerKind`, registered
in `eventsvc.triggers.REGISTRY` under its YAML key. Shared mechanics (parameters,
retries, rate limits, results) live in the engine, never in a kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import aiohttp

from eventsvc.config import Config
from eventsvc.events import CloudEvent
from eventsvc.github.client import GitHubClient, GitHubSettings
from eventsvc.github.mirror import Mirrors
from eventsvc.kube import Cluster

URL_MARK = "x-eventsvc-url"
"""In a trigger kind's schema, marks a string field that is a URL: a value rendered into
it with text around it is percent-encoded (sensors/params.py). A field that is one
`{{ expr }}` and nothing else is a whole-URL template, the author's explicit choice."""

if TYPE_CHECKING:
    from eventsvc.bus import Bus


class Services:
    """Process-wide clients shared by trigger kinds, each a typed attribute made on first use
    from the configuration (tests may set their own), closed once."""

    def __init__(self, config: Config, bus: Bus | None = None) -> None:
        self.config = config
        self.bus = bus
        self._http: aiohttp.ClientSession | None = None
        self._cluster: Cluster | None = None
        self._cluster_lock = asyncio.Lock()
        self._github: GitHubClient | None = None
        self._mirrors: Mirrors | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30, connect=5),
                headers={"User-Agent": "eventsvc"},
            )
        return self._http

    @property
    def github(self) -> GitHubClient:
        """The GitHub REST client (App or token auth from the configuration)."""
        if self._github is None:
            self._github = GitHubClient(GitHubSettings.from_config(self.config), self.http)
        return self._github

    @github.setter
    def github(self, client: GitHubClient) -> None:
        self._github = client

    @property
    def mirrors(self) -> Mirrors:
        """The bare git mirrors of deployment repositories, kept on disk between runs."""
        if self._mirrors is None:
            self._mirrors = Mirrors.from_config(self.config)
        return self._mirrors

    async def cluster(self) -> Cluster:
        """The process-wide Kubernetes client, connected on first use (ConfigError, which
        a run treats as permanent, when there is no access)."""
        if self._cluster is None:
            async with self._cluster_lock:
                if self._cluster is None:
                    self._cluster = await Cluster.connect(self.config)
        return self._cluster

    async def close(self) -> None:
        if self._github is not None:
            await self._github.close()
        if self._http is not None:
            await self._http.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


@dataclass(frozen=True, slots=True)
class TriggerContext:
    """Who is firing, and for which events (by dependency name)."""

    sensor: str
    trigger: str
    events: Mapping[str, CloudEvent]
    attempt: int = 1
    dry_run: bool = False
    run_key: str = ""
    """The same for every attempt and redelivery of one run (sensor, trigger, events): what a
    receiver deduplicates on (`Idempotency-Key` of the http trigger)."""

    @property
    def event_ids(self) -> list[str]:
        return [e.get_id() for e in self.events.values()]

    @property
    def first(self) -> CloudEvent:
        return next(iter(self.events.values()))


@dataclass(slots=True)
class TriggerResult:
    """What a run did; `detail` is JSON-able and lands in the result event."""

    outcome: str = "success"  # or "skipped": looked, had nothing to do
    detail: dict[str, Any] = field(default_factory=dict)


class TriggerKind(Protocol):
    key: ClassVar[str]
    """The YAML key under `template` that selects this kind."""
    schema: ClassVar[dict[str, Any]]
    """JSON Schema of the kind's section; unknown fields must be refused."""

    def __init__(self, services: Services) -> None: ...

    @classmethod
    def check(cls, spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems the schema cannot express: (path inside the section, message)."""
        ...

    @classmethod
    def explain(cls, spec: Mapping[str, Any], first: CloudEvent | None) -> str | None:
        """What it would do with this rendered section, said without doing it (the objects
        it would create, the request it would send): `eventsvc test` prints it."""
        ...

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        """Do it. Raise PermanentTriggerError or TemporaryTriggerError on failure."""
        ...
