"""The console adapter: chat with the bot in a terminal, or feed it lines through a pipe.

The console user owns the machine, so they are an admin. `/quit` (or end of input) ends the chat.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import threading
from typing import TextIO

from bot.config import Config
from bot.engine import ChatEngine
from bot.health import readiness
from bot.message import IncomingMessage

PROMPT = ">> You: "
REPLY_PREFIX = "Bot: "
QUIT_WORDS = frozenset({"/quit", "/exit"})


def _read_lines(stream: TextIO, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    # A daemon thread, not the default executor: a blocked readline() must not keep the process alive on exit.
    for line in iter(stream.readline, ""):
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def serve(
    engine: ChatEngine, config: Config, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> None:
    """Read lines from `stdin` and print the replies until `/quit` or end of input."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_read_lines, args=(stdin, loop, queue), daemon=True, name="console-input").start()
    readiness.ready("console")
    user = getpass.getuser()

    async def send(text: str) -> None:
        stdout.write(f"{REPLY_PREFIX}{text}\n")
        stdout.flush()

    while True:
        if interactive:
            stdout.write(PROMPT)
            stdout.flush()
        line = await queue.get()
        if line is None:
            break
        text = line.strip()
        if not text:
            continue
        if text.lower() in QUIT_WORDS:
            break
        message = IncomingMessage(
            platform="console",
            channel_key=f"console:{config.console.name}",
            author_id=user,
            author_name=user,
            text=text,
            is_admin=True,
            is_direct=True,
        )
        await engine.handle(message, send)
    readiness.not_ready("console", "input ended", expected=True)
