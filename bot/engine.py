"""The chat engine: one conversation per channel key, answered in order, channels in parallel.

`handle` answers a normalized message: a command from the command table, or a model reply built from the
channel's stored history. The exchange (user turn and reply) is stored only after the adapter delivered the
reply, in one transaction: a reply that failed to send never becomes history, so it cannot poison later
prompts, and history never holds a user turn without its answer.
"""

from __future__ import annotations

import logging
import time
from asyncio import Lock
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from bot.commands import CommandContext, parse_command
from bot.config import Config
from bot.generation import Generator
from bot.message import IncomingMessage, Reply, ReplyKind, Send
from storage import HistoryStore, NewTurn, Role

logger = logging.getLogger(__name__)

EMPTY_MESSAGE_HINT = "Say something after mentioning me, or send `help` to see what I can do."
GENERATION_FAILED = "Sorry, I couldn't come up with a reply just now. Please try again."


@dataclass(slots=True)
class _ChannelLock:
    lock: Lock = field(default_factory=Lock)
    users: int = 0


class ChatEngine:
    """Answers messages; the adapters own the platforms, the store owns persistence."""

    def __init__(self, store: HistoryStore, generator: Generator, config: Config) -> None:
        self.store = store
        self.generator = generator
        self.config = config
        self._channels: dict[str, _ChannelLock] = {}

    @asynccontextmanager
    async def _channel(self, key: str) -> AsyncIterator[None]:
        # asyncio.Lock wakes waiters first-in first-out, which is what keeps a channel's messages in order.
        entry = self._channels.setdefault(key, _ChannelLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._channels[key]

    async def handle(self, msg: IncomingMessage, send: Send) -> Reply:
        """Answer `msg` through `send`; return what was answered and whether it was delivered."""
        text = msg.text.strip()
        if not text:
            return await self._deliver(msg, send, EMPTY_MESSAGE_HINT, ReplyKind.NOTICE)
        command = parse_command(text)
        async with self._channel(msg.channel_key):
            if command is None:
                return await self._chat(msg, text, send)
            if command.admin_only and not msg.is_admin:
                logger.info("refused %s to %s in %s", command.name, msg.author_id, msg.channel_key)
                refusal = f"Sorry, only admins can use `{command.name}` here."
                return await self._deliver(msg, send, refusal, ReplyKind.NOTICE)
            logger.info("command %s by %s in %s", command.name, msg.author_id, msg.channel_key)
            answer = await command.handler(CommandContext(message=msg, engine=self))
            return await self._deliver(msg, send, answer, ReplyKind.COMMAND)

    async def _chat(self, msg: IncomingMessage, text: str, send: Send) -> Reply:
        started = time.perf_counter()
        history = await self.store.recent_turns(msg.channel_key, self.config.history.max_turns)
        turns = [turn.text for turn in history] + [text]
        try:
            answer = await self._generate(turns)
        except Exception:
            logger.exception("generation failed in %s", msg.channel_key)
            return await self._deliver(msg, send, GENERATION_FAILED, ReplyKind.NOTICE)
        generated = time.perf_counter()
        reply = await self._deliver(msg, send, answer, ReplyKind.CHAT)
        if reply.delivered:
            await self.store.append_turns(
                msg.channel_key,
                [NewTurn(Role.USER, msg.author_id, text), NewTurn(Role.BOT, "bot", answer)],
            )
        logger.info(
            "answered %s in %s: %d history turns, generate %.2fs, total %.2fs",
            msg.author_id,
            msg.channel_key,
            len(history),
            generated - started,
            time.perf_counter() - started,
        )
        return reply

    async def _generate(self, turns: list[str]) -> str:
        """The model's reply; an empty one is retried once, then replaced: never send an empty message."""
        for _attempt in range(2):
            answer = (await self.generator.generate(turns)).strip()
            if answer:
                return answer
        logger.info("model gave an empty reply twice; using the fallback reply")
        return self.config.generation.fallback_reply

    async def _deliver(self, msg: IncomingMessage, send: Send, text: str, kind: ReplyKind) -> Reply:
        try:
            await send(text)
        except Exception as exc:
            logger.warning("could not send a %s reply in %s: %s", kind.value, msg.channel_key, exc)
            return Reply(text=text, kind=kind, delivered=False)
        return Reply(text=text, kind=kind, delivered=True)
