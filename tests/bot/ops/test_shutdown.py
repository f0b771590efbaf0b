"""SIGTERM while serving: the engine drains, then the adapters and background jobs stop."""

import asyncio
import signal

from bot.config import parse_config
from bot.core.message import IncomingMessage
from bot.ops.shutdown import StopSignals, serve_until_stopped
from bot.testing import Outbox, make_engine
from bot.testing import ScriptedGenerator as FakeGenerator
from tests.waiting import eventually


def deliver_sigterm() -> None:
    """What the loop does when SIGTERM arrives: call the handler `StopSignals` installed for it.

    Not a real signal: in a test process holding native runtimes (CTranslate2, OpenVINO, torch) a real SIGTERM
    has crashed the interpreter; the real signal is sent to real `dialobot` processes instead
    (tests/adapters/test_console.py, `python -m bot.bench.chaos`).
    """
    handle = asyncio.get_running_loop()._signal_handlers[signal.SIGTERM]
    handle._run()


def msg(text, channel="console:a", author="u1"):
    return IncomingMessage(platform="test", channel_key=channel, author_id=author, text=text)


async def test_sigterm_drains_then_stops_the_adapters(store):
    generator = FakeGenerator(delay=0.3)
    engine = make_engine(store, generator, parse_config({"shutdown": {"deadline_seconds": 5}}))
    out = Outbox()
    adapter_stopped = asyncio.Event()

    async def adapter():
        try:
            task = asyncio.create_task(engine.handle(msg("in flight"), out))
            await eventually(lambda: generator.calls, what="the answer is generating")
            deliver_sigterm()
            await task
            await asyncio.sleep(3600)
        finally:
            adapter_stopped.set()

    loop = asyncio.get_running_loop()
    signals = StopSignals()
    try:
        await asyncio.wait_for(serve_until_stopped(engine, adapter(), signals), timeout=5)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    assert signals.received is signal.SIGTERM
    assert adapter_stopped.is_set()
    assert out.sent == ["echo: in flight (1 turns seen)"]
    assert await store.count_turns("console:a") == 2


async def test_background_jobs_run_while_serving_and_are_cancelled_at_the_stop(store):
    engine = make_engine(store, FakeGenerator(), parse_config({}))
    job_started, job_cancelled = asyncio.Event(), asyncio.Event()

    async def job():
        job_started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            job_cancelled.set()
            raise

    async def adapter():
        await job_started.wait()
        deliver_sigterm()
        await asyncio.sleep(3600)

    loop = asyncio.get_running_loop()
    signals = StopSignals()
    try:
        await asyncio.wait_for(serve_until_stopped(engine, adapter(), signals, [job()]), timeout=5)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    assert job_cancelled.is_set()
