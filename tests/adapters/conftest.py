"""The fake platforms, started for one test: discord.py and slack-bolt talk to them over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.bench.fake_discord import FakeDiscord, point_discord_py_at
from bot.bench.fake_slack import FakeSlack


@pytest.fixture
async def discord_fake(monkeypatch) -> AsyncIterator[FakeDiscord]:
    """The fake Discord, with discord.py's HTTP and gateway addresses pointed at it."""
    fake = FakeDiscord()
    await fake.start()
    point_discord_py_at(fake, monkeypatch)
    yield fake
    await fake.close()


@pytest.fixture
async def slack_fake() -> AsyncIterator[FakeSlack]:
    """The fake Slack: Web API and Socket Mode on loopback."""
    server = FakeSlack()
    await server.start()
    yield server
    await server.close()
