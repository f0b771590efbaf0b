"""The crash test, shortened: the real `dialobot run` killed (SIGKILL and SIGTERM) while messages stream in
from the fake Discord and the fake Slack; every message answered exactly once, history as the users saw it.
`python -m bot.bench.chaos` is the full run (docs/reliability.md)."""

from __future__ import annotations

import os

import pytest

from bot.bench.chaos import parser, run_chaos
from tests.conftest import POSTGRES_URL_ENV

pytestmark = pytest.mark.process


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_killed_again_and_again_every_message_is_answered_exactly_once(database, tmp_path):
    url = ""
    if database == "postgresql":
        url = os.environ.get(POSTGRES_URL_ENV, "")
        if not url:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{POSTGRES_URL_ENV} is not set in CI")
            pytest.skip(f"{POSTGRES_URL_ENV} is not set (start a server with `sudo .ci/postgres`)")
    args = parser().parse_args(
        ["--messages", "30", "--kills", "5", "--max-uptime", "4", "--seed", "7", "--db-url", url]
    )
    result = await run_chaos(args, tmp_path)
    assert result.kills >= 5 and result.sent >= 30
    assert (result.answered_twice, result.never_answered, result.disagreements) == (0, 0, 0), result.problems
    assert result.inbox_states.get("received", 0) == 0
