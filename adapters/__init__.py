"""Platform adapters: each turns its platform's events into `IncomingMessage`s and sends the engine's replies.

Every adapter module exposes `create(engine, config)`, which returns its `bot.core.adapter.Adapter`: `run`
answers until its platform connection ends; `stop` or cancellation ends it. Modules are imported only when
enabled, so a platform's SDK is loaded only by the adapter that needs it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import TYPE_CHECKING

from bot.config import Config

if TYPE_CHECKING:
    from bot.core.adapter import Adapter
    from bot.core.engine import ChatEngine

logger = logging.getLogger(__name__)

ADAPTERS = ("console", "discord", "slack")


def enabled_adapters(config: Config) -> list[str]:
    return [name for name in ADAPTERS if getattr(config, name).enabled]


async def serve_all(engine: ChatEngine, config: Config, names: list[str]) -> None:
    """Run the named adapters together until all have ended; the first failure stops the others."""
    modules = [importlib.import_module(f"adapters.{name}") for name in names]
    try:
        async with asyncio.TaskGroup() as group:
            for name, module in zip(names, modules, strict=True):
                logger.info("starting the %s adapter", name)
                adapter: Adapter = module.create(engine, config)
                group.create_task(adapter.run(), name=f"adapter:{name}")
    except ExceptionGroup as group:
        if len(group.exceptions) == 1:  # one adapter failed: report its error, not a group of one
            raise group.exceptions[0] from None
        raise
