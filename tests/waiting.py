"""Waiting in tests: poll a condition with a deadline, never a bare sleep.

A test proves that something happened by waiting for it (`eventually`), and that something did *not* happen by
waiting for a later thing that would have come after it (a second message's reply), then looking.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
"""Generous: the suite runs on loaded 2-core machines; a condition that holds is seen within milliseconds."""


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    within: float = DEFAULT_TIMEOUT,
    interval: float = 0.01,
    what: str = "",
) -> T:
    """Poll `predicate` (plain or async) until it returns something true, and return that.

    Fails with an `AssertionError` naming `what` (or the predicate) after `within` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(
                f"not within {within:g} s: {what or getattr(predicate, '__name__', predicate)}"
            )
        await asyncio.sleep(interval)
