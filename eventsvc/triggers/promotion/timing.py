"""The clocks of a promotion run: wall time and waiting (batch windows), and the time a
run spends in git and in GitHub API calls (reported in its result)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Timer:
    git: float = 0.0
    api: float = 0.0

    async def api_call(self, awaitable: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.api += time.perf_counter() - started


@dataclass(slots=True)
class Clock:
    """Wall time and waiting, replaceable in tests (batch windows)."""

    now: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
