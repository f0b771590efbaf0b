"""The composition root: wires the store, the generator, the engine, the adapters and the background jobs.

Everything else receives what it needs from here; nothing below reaches back for a global. `serve` is what
`dialobot chat` and `dialobot run` start.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Coroutine
from typing import Any

from adapters import serve_all
from bot.config import Config
from bot.core.engine import ChatEngine
from bot.errors import DialobotError
from bot.generation.backends import load_backend
from bot.generation.prompt import prompt_turns
from bot.generation.scheduler import build_generator
from bot.ops.health_server import start_operations
from bot.ops.retention import run_retention
from bot.ops.shutdown import StopSignals, serve_until_stopped
from bot.ops.storage_health import watch_storage
from bot.safety import build_filter
from storage import HistoryStore, open_store


def background_jobs(store: HistoryStore, config: Config) -> list[Coroutine[Any, Any, None]]:
    """What runs beside the adapters while the bot serves: the database probe behind /healthz, and the
    retention schedule (the inbox's limit always, stored history's when one is set)."""
    return [watch_storage(store, config.storage.check_seconds), run_retention(store, config)]


async def serve(config: Config, adapters: list[str]) -> None:
    """Open the database, load the model, and serve the named adapters until they end or a stop signal."""
    if not adapters:
        raise DialobotError("no adapter is enabled: enable console, discord or slack in the config")
    # SIGTERM (docker stop, systemd) and Ctrl-C: the engine drains, adapters disconnect, the database closes.
    signals = StopSignals()
    # The database first: a bad URL or a schema to upgrade is reported before minutes of model loading.
    store = await open_store(config.storage.resolve_url(), setting=config.storage.setting())
    operations = generator = reply_filter = None
    try:
        operations = await start_operations(config, adapters)  # /healthz answers "model: loading" meanwhile
        operations.attach_store(store)
        # The safety filter before the model: a missing classifier is reported in seconds, not minutes.
        reply_filter = await in_daemon_thread(build_filter, config.safety)
        generator = build_generator(await in_daemon_thread(load_backend, config), config)
        operations.model_loaded()
        engine = ChatEngine(store, generator, config, turn_rule=prompt_turns, reply_filter=reply_filter)
        await serve_until_stopped(
            engine, serve_all(engine, config, adapters), signals, background_jobs(store, config)
        )
    except asyncio.CancelledError:
        if signals.received is None:
            raise
        # Stopped during start-up (or by a second signal): nothing was being answered.
    finally:
        if generator is not None:
            await generator.close()
        if reply_filter is not None:
            await reply_filter.close()
        await store.close()
        if operations is not None:
            await operations.close()
    if signals.received is signal.SIGINT:
        raise KeyboardInterrupt


async def in_daemon_thread(function, *args):
    """`function(*args)` on a daemon thread: a stop during a long load (the first demo build takes minutes)
    must not wait for it, as `run_in_executor`'s threads would at interpreter exit."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def work() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # delivered to the awaiting task, not lost on this thread
            result, error = None, exc
        else:
            error = None
        with contextlib.suppress(RuntimeError):  # the loop already closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, daemon=True, name="load-model").start()
    return await future
