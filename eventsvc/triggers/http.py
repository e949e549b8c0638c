"""`http`: send the matched event as a structured CloudEvent to a URL; 2xx is success."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp

from eventsvc import events
from eventsvc.durations import parse_duration
from eventsvc.errors import PermanentTriggerError, TemporaryTriggerError, retry_after_seconds
from eventsvc.triggers.base import URL_MARK, Services, TriggerContext, TriggerResult

# statuses worth retrying: the server may recover; other 4xx will not change by themselves
_RETRYABLE = {408, 425, 429}


LARGE_BODY = 2**20


@dataclass(frozen=True, slots=True)
class HttpSpec:
    """The rendered `http` section, parsed and checked once (`parse`)."""

    url: str
    method: str
    headers: Mapping[str, str]  # Content-Type first, then the section's, checked
    timeout: float  # seconds

    @classmethod
    def parse(cls, spec: Mapping[str, Any], event_id: str) -> HttpSpec:
        """The rendered section; `event_id` (the first event's) names where a bad value
        came from."""
        url = str(spec["url"])
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = repr(url if len(url) <= 200 else url[:200] + "...")
            raise PermanentTriggerError(f"url {shown} (as rendered for event "
                                        f"{event_id}) is not an http(s) URL with a "
                                        "host; fix the url template")  # fmt: skip
        method = str(spec.get("method", "POST"))
        headers = {"Content-Type": events.STRUCTURED_CONTENT_TYPE}
        for name, value in (spec.get("headers") or {}).items():
            text = value if isinstance(value, str) else str(value)
            if not text.isprintable() or not str(name).isprintable():  # CR, LF, NUL, ...
                raise PermanentTriggerError(
                    f"header {str(name)[:100]!r}: the value rendered for event "
                    f"{event_id} holds a control character (CR, LF, ...), which "
                    "would start a new header; refused"
                )
            headers[str(name)] = text
        return cls(url, method, headers, parse_duration(spec.get("timeout", "30s")))


class HttpTrigger:
    key: ClassVar[str] = "http"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            # values rendered into it with text around them are percent-encoded
            "url": {"type": "string", "minLength": 1, URL_MARK: True},
            "method": {"enum": ["POST", "PUT", "PATCH", "GET", "DELETE"]},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "timeout": {"type": ["string", "number"]},
        },
    }

    def __init__(self, services: Services) -> None:
        self.services = services

    @classmethod
    def explain(cls, spec: Mapping[str, Any], first: events.CloudEvent | None) -> str:
        return (f"sends {spec.get('method', 'POST')} {spec.get('url')} with the event as a "
                "structured CloudEvent; 2xx is success")  # fmt: skip

    @classmethod
    def check(cls, spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        url = spec.get("url")
        if isinstance(url, str) and "{{" not in url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                problems.append((("url",), f"{url!r} is not an http(s) URL"))
        if "timeout" in spec:
            try:
                parse_duration(spec["timeout"])
            except ValueError as e:
                problems.append((("timeout",), str(e)))
        return problems

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        parsed = HttpSpec.parse(spec, ctx.first.get_id())
        url, method = parsed.url, parsed.method
        headers = dict(parsed.headers)
        if ctx.run_key and not any(k.lower() == "idempotency-key" for k in headers):
            headers["Idempotency-Key"] = ctx.run_key  # the same on every attempt of this run
        raw = events.to_structured(ctx.first)
        # aiohttp streams a file-like body without blocking the loop
        body: bytes | io.BytesIO = io.BytesIO(raw) if len(raw) > LARGE_BODY else raw
        timeout = aiohttp.ClientTimeout(total=parsed.timeout)
        try:
            async with self.services.http.request(
                method, url, data=body, headers=headers, timeout=timeout
            ) as resp:
                text = (await resp.text(errors="replace"))[:500]
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TemporaryTriggerError(f"{method} {url}: {type(e).__name__}: {e}") from e
        if 200 <= status < 300:
            return TriggerResult(detail={"status": status, "url": url})
        message = f"{method} {url} answered {status}: {text.strip() or '(empty body)'}"
        if status >= 500 or status in _RETRYABLE:
            delay = retry_after_seconds(retry_after)
            raise TemporaryTriggerError(message, delay=delay)
        raise PermanentTriggerError(message)
