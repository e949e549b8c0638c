"""structlog set-up: JSON when stderr is not a terminal, readable console otherwise.

No secret in a log line: `redact_url` takes the password (or token) out of every URL,
and the processor `redact_urls` applies it to every string a log line carries.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "<redacted>"
# scheme://userinfo@ : userinfo cannot hold / ? # @ (they would be percent-encoded)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#@\s]*)@")


def _redact_userinfo(m: re.Match[str]) -> str:
    user, colon, _ = m["userinfo"].partition(":")
    # user:password keeps the user; a lone name is a token to NATS (nats://token@host)
    return f"{m['scheme']}{user}:{REDACTED}@" if colon else f"{m['scheme']}{REDACTED}@"


def redact_url(text: str) -> str:
    """`text` with the secret of every URL in it replaced, for logs and messages:
    `nats://app:s3cret@nats:4222` -> `nats://app:<redacted>@nats:4222`,
    `nats://t0ken@nats` -> `nats://<redacted>@nats`; a comma-separated list of
    servers, or a URL inside a longer message, is handled the same way."""
    if "@" not in text or "://" not in text:
        return text
    return _USERINFO.sub(_redact_userinfo, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact_urls(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: `redact_url` over every string of the line (nested too), so an
    error message quoting a URL cannot leak its password either."""
    for key, value in event_dict.items():
        event_dict[key] = _redact_value(value)
    return event_dict


def configure(fmt: str = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_urls,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(logger_name=name)
    return logger
