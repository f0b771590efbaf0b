"""Adapters report readiness for /healthz: Discord is ready on READY, not ready when the gateway drops, and
ready again once the session resumes; the real discord.py client against the fake Discord."""

from __future__ import annotations

import asyncio

from adapters import discord as discord_adapter
from bot.bench.fake_discord import FakeDiscord, point_discord_py_at
from bot.config import parse_config
from bot.ops.readiness import readiness
from bot.testing import make_engine
from tests.waiting import eventually


async def test_discord_readiness_follows_the_gateway(monkeypatch, store, fake_generator):
    fake = FakeDiscord()
    await fake.start()
    point_discord_py_at(fake, monkeypatch)
    monkeypatch.setenv("DISCORD_BOT_TOKEN", fake.token)
    reasons: list[str] = []
    original = readiness.not_ready

    def recording(component: str, reason: str) -> None:
        reasons.append(f"{component}: {reason}")
        original(component, reason)

    monkeypatch.setattr(readiness, "not_ready", recording)
    config = parse_config({"discord": {"enabled": True}})
    readiness.expect(["discord"])
    assert readiness.problems() == ["discord: starting"]
    task = asyncio.create_task(discord_adapter.serve(make_engine(store, fake_generator, config), config))
    try:
        await eventually(lambda: readiness.problems() == [], what="discord ready")
        await fake.connections[0].ws.close(code=4000)  # a resumable close, as Discord does now and then
        await eventually(lambda: "discord: disconnected from the gateway; reconnecting" in reasons)
        await eventually(lambda: readiness.problems() == [])  # RESUMED
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fake.close()
