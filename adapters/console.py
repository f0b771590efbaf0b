"""The console adapter: chat with the bot in a terminal, or feed it lines through a pipe.

The console user owns the machine, so they administer every console conversation (admin scope
`console`). `/quit` (or end of input) ends the chat. A line the last run took on but never answered (it was
stopped first) is answered when the chat starts again.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import threading
from typing import TextIO

from bot.config import Config
from bot.core.engine import ChatEngine
from bot.core.message import IncomingMessage, Send, conversation_key
from bot.ops.readiness import readiness

PROMPT = ">> You: "
REPLY_PREFIX = "Bot: "
QUIT_WORDS = frozenset({"/quit", "/exit"})


def _read_lines(stream: TextIO, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    # A daemon thread, not the default executor: a blocked readline() must not keep the process alive on exit.
    for line in iter(stream.readline, ""):
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, None)


class ConsoleAdapter:
    """Lines from `stdin` in, replies to `stdout` out, one conversation: `console:<console.name>`."""

    name = "console"

    def __init__(
        self, engine: ChatEngine, config: Config, stdin: TextIO | None = None, stdout: TextIO | None = None
    ) -> None:
        self.engine = engine
        self.key = conversation_key("console", config.console.name)
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def send(self, text: str) -> None:
        self.stdout.write(f"{REPLY_PREFIX}{text}\n")
        self.stdout.flush()

    def sender_for(self, message: IncomingMessage) -> Send | None:
        """A line left unanswered by the last run is answered here, if it was this conversation's."""
        return self.send if message.channel_key == self.key else None

    async def run(self) -> None:
        """Read lines and print the replies until `/quit`, end of input, or `stop`."""
        interactive = self.stdin.isatty()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=_read_lines, args=(self.stdin, loop, self._queue), daemon=True, name="console-input"
        ).start()
        await self.engine.recover("console", self.sender_for)
        readiness.ready("console")
        user = getpass.getuser()
        while True:
            if interactive:
                self.stdout.write(PROMPT)
                self.stdout.flush()
            line = await self._queue.get()
            if line is None:
                break
            text = line.strip()
            if not text:
                continue
            if text.lower() in QUIT_WORDS:
                break
            message = IncomingMessage(
                platform="console",
                channel_key=self.key,
                author_id=user,
                author_name=user,
                text=text,
                admin_scope="console",
                is_direct=True,
            )
            await self.engine.handle(message, self.send)
        readiness.not_ready("console", "input ended", expected=True)

    async def stop(self) -> None:
        self._queue.put_nowait(None)


def create(engine: ChatEngine, config: Config) -> ConsoleAdapter:
    return ConsoleAdapter(engine, config)


async def serve(
    engine: ChatEngine, config: Config, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> None:
    """Read lines from `stdin` and print the replies until `/quit` or end of input."""
    await ConsoleAdapter(engine, config, stdin, stdout).run()
