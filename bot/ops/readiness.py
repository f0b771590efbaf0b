"""Readiness: is the bot ready to answer? The model and every enabled adapter report here; /healthz reads it.

A tiny registry rather than a poll of each part, so the core never reaches into a platform SDK: adapters call
`readiness.ready("discord")` on their platform's connect event and `readiness.not_ready("discord", why)` when
the connection drops. Before anything reports, a component is "starting".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

logger = logging.getLogger(__name__)


class Readiness:
    """Which components must be ready, and why each one that is not, is not."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # adapters may report from another thread (the console reader)
        self._waiting: dict[str, str] = {}
        self._expected: set[str] = set()

    def expect(self, components: Iterable[str]) -> None:
        """Start over: these components must all be ready for the bot to be healthy."""
        with self._lock:
            self._expected = set(components)
            self._waiting = {name: "starting" for name in self._expected}

    def ready(self, component: str) -> None:
        with self._lock:
            if self._waiting.pop(component, None) is not None:
                logger.info("%s is ready", component)

    def not_ready(self, component: str, reason: str, expected: bool = False) -> None:
        """Mark `component` not ready; `expected` (an orderly end) logs at INFO instead of WARNING."""
        with self._lock:
            if component in self._expected:
                if component not in self._waiting:
                    logger.log(
                        logging.INFO if expected else logging.WARNING,
                        "%s is not ready: %s",
                        component,
                        reason,
                    )
                self._waiting[component] = reason

    def problems(self) -> list[str]:
        """`component: reason` for each expected component that is not ready; empty when healthy."""
        with self._lock:
            return [f"{name}: {reason}" for name, reason in sorted(self._waiting.items())]


readiness = Readiness()
"""The process's one registry: the model loader, adapters and the health server share it."""
