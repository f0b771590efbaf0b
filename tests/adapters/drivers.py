"""One driver per platform for the adapter contract suite (test_contract.py): the real adapter, started
through its module's `create(engine, config)`, on its fake platform.

A driver says things the way a person on that platform would (in a channel, a thread or a DM; addressed to the
bot or not; as an admin or not; with a given message/event id, to deliver the same message twice) and reads
what the platform received from the bot, place by place. Places: "channel" (a server/workspace channel),
"thread" (a thread under it), "dm" (a direct conversation; the console is one). Test-only, not product code.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import queue
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from bot.config import Config, parse_config
from bot.core.adapter import Adapter
from bot.core.engine import ChatEngine
from bot.testing import ScriptedGenerator, make_engine
from storage.types import HistoryStore
from tests.waiting import eventually

STOP_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message a driver delivered: where, and the platform's id for it (pass it again to re-deliver)."""

    where: str
    id: str
    text: str


class Driver:
    """The common part: engine, scripted generator, the adapter's `run` task, waiting for replies."""

    name: ClassVar[str]
    limit: ClassVar[int | None]
    """Characters per platform message; None: no limit (a reply is shown whole)."""
    places: ClassVar[tuple[str, ...]]
    features: ClassVar[frozenset[str]]
    """What the platform has: "mentions" (messages not addressed to the bot exist and are ignored), "threads",
    "non_admins" (a user who is not an admin), "message_ids" (a delivery can be repeated with its id)."""
    home: ClassVar[str]
    """The place a plain conversation happens in."""

    def __init__(self, store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = store
        self.monkeypatch = monkeypatch
        self.generator = ScriptedGenerator()
        self.engine: ChatEngine | None = None
        self.adapter: Any = None
        self.first_steps_delay = 0.0
        """Seconds the adapter's own steps before the engine take (Discord: the typing indicator's REST call);
        platforms without such steps ignore it."""
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle ----

    async def open(self) -> None:
        """Start the fake platform."""

    async def close(self) -> None:
        """Stop the fake platform."""

    def settings(self) -> dict[str, Any]:
        return {}

    async def start(self, **settings: Any) -> None:
        """Create the adapter with `create(engine, config)`, run it, and return once it receives messages."""
        config: Config = parse_config(
            {"history": {"max_turns": 10}, self.name: {"enabled": True, **self.settings(), **settings}}
        )
        self.engine = make_engine(self.store, self.generator, config)
        module = importlib.import_module(f"adapters.{self.name}")
        self.adapter = module.create(self.engine, config)
        assert isinstance(self.adapter, Adapter) and self.adapter.name == self.name
        self._prepare()
        self._task = asyncio.create_task(self.adapter.run(), name=f"adapter:{self.name}")
        await self._connected()

    def _prepare(self) -> None:
        """Adjust the created adapter before it runs."""

    async def _connected(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """`stop()` the adapter and wait for `run()` to return. Idempotent."""
        if self._task is None:
            return
        task, self._task = self._task, None
        await self.adapter.stop()
        done, _ = await asyncio.wait([task], timeout=STOP_SECONDS)
        assert done, f"the {self.name} adapter's run() did not return within {STOP_SECONDS:g} s of stop()"
        if not task.cancelled():  # a drain that ran out of time cancels what was handling a message
            task.result()

    # ---- talking ----

    async def say(
        self,
        text: str,
        where: str | None = None,
        *,
        addressed: bool = True,
        admin: bool = False,
        message_id: str | None = None,
    ) -> Delivery:
        """Deliver `text` from a person (an admin if `admin`) in `where` (default: `home`), mentioning the bot
        if `addressed`; `message_id` repeats an earlier delivery's id (the same message delivered again)."""
        raise NotImplementedError

    async def accepted(self, delivery: Delivery) -> None:
        """Wait until the adapter has taken the message in (the platform handed it over)."""

    def received(self, where: str | None = None) -> list[str]:
        """The texts of the messages the bot posted in `where` so far, oldest first."""
        raise NotImplementedError

    def key(self, where: str | None = None) -> str:
        """The conversation key of `where`."""
        raise NotImplementedError

    async def replies(self, where: str | None = None, count: int = 1) -> list[str]:
        """Everything posted in `where`, once there are at least `count` messages."""
        await eventually(
            lambda: len(self.received(where)) >= count, what=f"{count} replies in {self.name} {where}"
        )
        return self.received(where)

    async def reply_starting(self, prefix: str, where: str | None = None) -> list[str]:
        """Everything posted in `where`, once a message starting with `prefix` is among it."""
        await eventually(
            lambda: any(r.startswith(prefix) for r in self.received(where)),
            what=f"a reply starting {prefix!r} in {self.name} {where}",
        )
        return self.received(where)


# ---- console ----


class ScriptedStdin:
    """The console's input: lines the test types, read by the adapter's reader thread; `close` ends input.

    `taken` lists the lines the adapter has queued: the reader thread hands a line to the event loop before it
    asks for the next, so a line is appended (on the loop, after the adapter's own hand-over) at that moment.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._last: str | None = None
        self.taken: list[str] = []
        self.reader: threading.Thread | None = None

    def isatty(self) -> bool:
        return False

    def type(self, line: str) -> None:
        self._lines.put(line + "\n")

    def close(self) -> None:
        self._lines.put("")

    def readline(self) -> str:
        self.reader = threading.current_thread()
        if self._last is not None:
            self._loop.call_soon_threadsafe(self.taken.append, self._last)
        line = self._lines.get()
        self._last = line.rstrip("\n") or None
        return line


class Screen:
    """The console's output: each reply the adapter printed, without its prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.replies: list[str] = []

    def write(self, text: str) -> None:
        if text.startswith(self.prefix):  # the adapter writes each reply in one call
            self.replies.append(text.removeprefix(self.prefix).removesuffix("\n"))

    def flush(self) -> None:
        pass


class ConsoleDriver(Driver):
    name = "console"
    limit = None
    places = ("dm",)
    features = frozenset()  # one user (the machine's owner, an admin), one conversation, no message ids
    home = "dm"

    def _prepare(self) -> None:
        from adapters.console import REPLY_PREFIX

        self.stdin = ScriptedStdin(asyncio.get_running_loop())
        self.screen = Screen(REPLY_PREFIX)
        self.adapter.stdin, self.adapter.stdout = self.stdin, self.screen
        self._typed = 0

    async def _connected(self) -> None:
        pass  # input is queued until the adapter reads it

    async def stop(self) -> None:
        if self._task is not None:
            await self.adapter.stop()
            self.stdin.close()  # end of input: the reader thread ends
        await super().stop()
        reader = self.stdin.reader if hasattr(self, "stdin") else None
        # It hands one last "end of input" to the loop: let it, before the loop closes.
        await eventually(lambda: reader is None or not reader.is_alive(), what="the console reader ended")

    async def say(self, text, where=None, *, addressed=True, admin=False, message_id=None) -> Delivery:
        assert (where or self.home) == "dm" and message_id is None, "the console has one conversation, no ids"
        self._typed += 1
        self.stdin.type(text)
        return Delivery("dm", str(self._typed), text)

    async def accepted(self, delivery: Delivery) -> None:
        await eventually(lambda: len(self.stdin.taken) >= int(delivery.id), what=f"console read {delivery}")

    def received(self, where=None) -> list[str]:
        return list(self.screen.replies)

    def key(self, where=None) -> str:
        return "console:local"


# ---- Discord ----


class DiscordDriver(Driver):
    name = "discord"
    limit = 2000
    places = ("channel", "thread", "dm")
    features = frozenset({"mentions", "threads", "non_admins", "message_ids"})
    home = "channel"

    async def open(self) -> None:
        from bot.bench.fake_discord import FakeDiscord, point_discord_py_at

        self.fake = fake = FakeDiscord()
        await fake.start()
        point_discord_py_at(fake, self.monkeypatch)
        self.monkeypatch.setenv("DISCORD_BOT_TOKEN", fake.token)
        self.guild = fake.add_guild("test server")
        general = fake.add_channel(self.guild, "general")
        self.alice, self.mod = fake.user("alice"), fake.user("mod")
        self.channels = {
            "channel": general,
            "thread": fake.add_thread(general, "side topic"),
            "dm": fake.add_dm(self.alice),
        }
        self.entered: list[str] = []
        self._handling: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        for task in self._handling:  # messages still in the adapter's first steps when it stopped
            task.cancel()
        await asyncio.gather(*self._handling, return_exceptions=True)
        await self.fake.close()

    def _prepare(self) -> None:
        client = self.adapter.client
        client._connection.guild_ready_timeout = 0.05  # the fake sends every guild at once
        on_message, send_typing = client.on_message, client.http.send_typing

        async def entering(message):
            self.entered.append(str(message.id))
            task = asyncio.current_task()
            self._handling.add(task)
            try:
                await on_message(message)
            finally:
                self._handling.discard(task)

        async def typing(channel_id):
            await asyncio.sleep(self.first_steps_delay)
            return await send_typing(channel_id)

        client.on_message = entering  # discord.py dispatches to the instance's attribute
        client.http.send_typing = typing

    async def _connected(self) -> None:
        await eventually(self.adapter.client.is_ready, what="discord ready")

    async def say(self, text, where=None, *, addressed=True, admin=False, message_id=None) -> Delivery:
        where = where or self.home
        channel = self.channels[where]
        assert not (admin and where == "dm"), "server roles make the admin here; a DM has none"
        content = f"<@{self.fake.bot_user['id']}> {text}" if addressed else text
        roles = [self.fake.admin_role_id(self.guild)] if admin else None
        payload = self.fake.message(channel, self.mod if admin else self.alice, content, roles=roles)
        if message_id is not None:
            payload["id"] = message_id
        await self.fake.dispatch("MESSAGE_CREATE", payload)
        return Delivery(where, payload["id"], text)

    async def accepted(self, delivery: Delivery) -> None:
        await eventually(lambda: delivery.id in self.entered, what=f"discord took in {delivery}")

    def received(self, where=None) -> list[str]:
        return [body["content"] for body in self.fake.sent(self.channels[where or self.home])]

    def key(self, where=None) -> str:
        where = where or self.home
        channel = self.channels[where]
        if where == "dm":
            return f"discord:dm:{channel['id']}"
        parent = channel["parent_id"] or channel["id"]
        thread = f":{channel['id']}" if channel["parent_id"] else ""
        return f"discord:{self.guild['id']}:{parent}{thread}"


# ---- Slack ----

SLACK_THREAD = "1700000000.000001"


class SlackDriver(Driver):
    name = "slack"
    limit = 3000
    places = ("channel", "thread", "dm")
    features = frozenset({"mentions", "threads", "non_admins", "message_ids"})
    home = "channel"
    PLACES: ClassVar[dict[str, tuple[str, str | None]]] = {
        "channel": ("C1CHAN", None),
        "thread": ("C1CHAN", SLACK_THREAD),
        "dm": ("D1DM", None),
    }

    async def open(self) -> None:
        from bot.bench import fake_slack

        self.fake = fake_slack.FakeSlack()
        await self.fake.start()
        self.monkeypatch.setenv("SLACK_BOT_TOKEN", fake_slack.BOT_TOKEN)
        self.monkeypatch.setenv("SLACK_APP_TOKEN", fake_slack.APP_TOKEN)
        self.fake.users.update({"U1USER": {}, "U2ADMIN": {"is_admin": True}})
        self._numbers = itertools.count(1)
        self._deliveries: dict[str, tuple[dict, int]] = {}  # event id -> (the event, times delivered)

    async def close(self) -> None:
        await self.fake.close()

    def settings(self) -> dict[str, Any]:
        return {"api_url": self.fake.api_url}

    async def _connected(self) -> None:
        await self.fake.wait_connected()

    async def say(self, text, where=None, *, addressed=True, admin=False, message_id=None) -> Delivery:
        from bot.bench.fake_slack import BOT_USER_ID, event_callback

        where = where or self.home
        if message_id in self._deliveries:
            event, times = self._deliveries[message_id]
        else:
            number = next(self._numbers)
            message_id = message_id or f"Ev{number}"
            channel, thread_ts = self.PLACES[where]
            event = {
                "type": "app_mention" if addressed and where != "dm" else "message",
                "channel_type": "im" if where == "dm" else "channel",
                "user": "U2ADMIN" if admin else "U1USER",
                "text": f"<@{BOT_USER_ID}> {text}" if addressed else text,
                "ts": f"1700000100.{number:06d}",
                "channel": channel,
            }
            if thread_ts is not None:
                event["thread_ts"] = thread_ts
            times = 0
        self._deliveries[message_id] = (event, times + 1)
        # A repeated event id is Slack re-sending it (`retry_attempt` counts); the ack is awaited.
        await self.fake.send_event(
            event_callback(event, message_id), retry_attempt=times, retry_reason="timeout" if times else ""
        )
        return Delivery(where, message_id, text)

    def received(self, where=None) -> list[str]:
        channel, thread_ts = self.PLACES[where or self.home]
        return [
            p["text"] for p in self.fake.posted if p["channel"] == channel and p.get("thread_ts") == thread_ts
        ]

    def key(self, where=None) -> str:
        from bot.bench.fake_slack import TEAM_ID

        channel, thread_ts = self.PLACES[where or self.home]
        return f"slack:{TEAM_ID}:{channel}" + (f":{thread_ts}" if thread_ts else "")


DRIVERS: dict[str, type[Driver]] = {d.name: d for d in (ConsoleDriver, DiscordDriver, SlackDriver)}
