"""A clean stop on SIGTERM (docker stop, systemd) or Ctrl-C: no new messages, answers in progress finish.

While the bot serves, the first signal asks the engine to drain: it stops taking messages (late ones are told
the bot is restarting), gives the answers in progress `shutdown.deadline_seconds`, cancels the rest, and
waits for exchanges already delivered to be written. Only then are the adapters disconnected, and the caller
closes the database. Nothing is half-written: an exchange is stored in one transaction or not at all. Before
serving starts (the model is loading) a signal simply cancels start-up; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine, Sequence
from typing import Any

from bot.core.engine import ChatEngine

logger = logging.getLogger(__name__)


class StopSignals:
    """SIGTERM and SIGINT handlers for the running loop; `received` is the first signal that arrived."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.requested = asyncio.Event()
        self.serving = False
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received is not None or not self.serving:
            self.received = self.received or sig
            self._main.cancel()  # start-up, or a second signal: stop now
            return
        self.received = sig
        self.requested.set()


async def serve_until_stopped(
    engine: ChatEngine,
    serving: Coroutine[Any, Any, None],
    signals: StopSignals,
    jobs: Sequence[Coroutine[Any, Any, None]] = (),
) -> None:
    """Run `serving` (the adapters) and background `jobs` (retention) until they end or a stop comes."""
    adapters = asyncio.ensure_future(serving)
    background = [asyncio.create_task(job) for job in jobs]
    stop = asyncio.create_task(signals.requested.wait())
    signals.serving = True
    try:
        await asyncio.wait({adapters, stop}, return_when=asyncio.FIRST_COMPLETED)
        if adapters.done():
            adapters.result()  # they ended by themselves (end of console input) or failed: say why
            return
        deadline = engine.config.shutdown.deadline_seconds
        name = signals.received.name if signals.received else "stop"
        logger.warning("%s: finishing the answers in progress (at most %gs), then stopping", name, deadline)
        drained = await engine.drain(deadline)
        logger.warning("stopped: %d answers finished, %d cancelled", drained.finished, drained.cancelled)
    finally:
        for task in (adapters, stop, *background):
            task.cancel()
        await asyncio.gather(adapters, stop, *background, return_exceptions=True)
