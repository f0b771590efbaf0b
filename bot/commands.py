"""The platform-neutral commands, declared in one table; `help` is generated from it.

Adapters map their own syntax onto these (`/reset` in the console and as a Discord slash command,
`@bot reset` after a mention). A message is a command only when it is a command word and nothing else, with an
optional `/` or `!` in front, so "reset my password, please" is still chat.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.message import IncomingMessage

if TYPE_CHECKING:
    from bot.engine import ChatEngine

COMMAND_PREFIXES = "/!"


@dataclass(frozen=True, slots=True)
class CommandContext:
    message: IncomingMessage
    engine: ChatEngine


Handler = Callable[[CommandContext], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    admin_only: bool
    handler: Handler


async def _reset(ctx: CommandContext) -> str:
    deleted = await ctx.engine.store.reset_channel(ctx.message.channel_key)
    return f"History cleared ({deleted} turns deleted). Let's start over."


async def _help(ctx: CommandContext) -> str:
    lines = ["Talk to me in plain words. Commands:"]
    for command in COMMANDS:
        suffix = " (admins only)" if command.admin_only else ""
        lines.append(f"  {command.name} — {command.help}{suffix}")
    return "\n".join(lines)


async def _status(ctx: CommandContext) -> str:
    turns = await ctx.engine.store.count_turns(ctx.message.channel_key)
    info = ctx.engine.generator.info
    quant = "INT8" if info.quantization == "int8" else "none (FP32)"
    return (
        f"Model: {info.name} · backend {info.backend} · quantization {quant} "
        f"({info.projections.int8}/{info.projections.total} projections INT8) · "
        f"turns stored in this conversation: {turns}"
    )


COMMANDS: tuple[Command, ...] = (
    Command("help", "list the commands", admin_only=False, handler=_help),
    Command(
        "status", "show the model, its quantization and this conversation's stored turns", False, _status
    ),
    Command("reset", "forget this conversation's history", admin_only=True, handler=_reset),
)
_BY_NAME = {command.name: command for command in COMMANDS}


def parse_command(text: str) -> Command | None:
    """The command `text` invokes, or None if it is ordinary chat."""
    word = text.strip().lstrip(COMMAND_PREFIXES) if text.strip()[:1] in COMMAND_PREFIXES else text.strip()
    return _BY_NAME.get(word.lower())
