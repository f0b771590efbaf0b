"""The platform-neutral commands, declared in one table; `help` is generated from it.

Adapters map their own syntax onto these (`/reset` in the console and as a Discord slash command,
`@bot reset` after a mention). A message is a command only when it is a command's words and nothing else but
the arguments that command declares (`forget me confirm`, `purge U123`), with an optional `/` or `!` in front,
so "reset my password, please" and "forget me not" are still chat.

Destructive commands leave a row in the audit table (who, when, what), written in the same transaction as the
deletion itself. Admin commands act only inside what the admin administers (`IncomingMessage.admin_scope`): a
Discord server's managers purge a user's turns in that server only, a Slack workspace admin in that workspace,
a configured operator anywhere on the platform; the audit row records the scope.

`forget me` asks for a confirmation first: `forget me confirm` within `FORGET_CONFIRM_SECONDS` deletes the
user's stored messages, and the bot's replies to them, in every conversation on that platform.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.core.generator import ModelInfo
from bot.core.message import IncomingMessage
from bot.core.safety import NoFilter, ReplyFilter
from storage.types import AuditRecord, HistoryStore

COMMAND_PREFIXES = "/!"
FORGET_CONFIRM_SECONDS = 300.0


class PendingConfirmations:
    """Requests waiting for their `confirm`, by (command, platform, user); each expires after `ttl` s."""

    def __init__(
        self, ttl: float = FORGET_CONFIRM_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._asked: dict[tuple[str, str, str], float] = {}

    def ask(self, command: str, platform: str, user: str) -> None:
        self._drop_stale()
        self._asked[(command, platform, user)] = self._clock()

    def confirm(self, command: str, platform: str, user: str) -> bool:
        """True (and forgotten) if this user asked within `ttl`; False otherwise."""
        self._drop_stale()
        return self._asked.pop((command, platform, user), None) is not None

    def _drop_stale(self) -> None:
        now = self._clock()
        for key in [k for k, at in self._asked.items() if now - at > self.ttl]:
            del self._asked[key]

    def __len__(self) -> int:
        return len(self._asked)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a command handler may use: the message, its arguments, and the services passed in."""

    message: IncomingMessage
    args: tuple[str, ...]
    store: HistoryStore
    model: ModelInfo
    confirmations: PendingConfirmations
    safety: ReplyFilter = field(default_factory=NoFilter)

    def audit(self, action: str, target: str, detail: str = "") -> AuditRecord:
        """The audit row for `action` by this message's author (with the author's admin scope, if any)."""
        msg = self.message
        if msg.admin_scope is not None:
            detail = f"scope {msg.admin_scope}; {detail}" if detail else f"scope {msg.admin_scope}"
        return AuditRecord(f"{msg.platform}:{msg.author_id}", action, target, detail)


Handler = Callable[[CommandContext], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    admin_only: bool
    handler: Handler
    args: str = ""
    """A regular expression the words after the name must match in full; its groups are the arguments."""
    usage: str = ""
    """The arguments as shown in `help`, e.g. `<user id>`."""

    @property
    def takes_words(self) -> bool:
        """Whether words may follow the name (arguments, a confirmation): not a one-word command."""
        return bool(self.args)


async def _reset(ctx: CommandContext) -> str:
    key = ctx.message.channel_key
    deleted = await ctx.store.reset_channel(key, audit=ctx.audit("reset", key))
    return f"History cleared ({deleted} turns deleted). Let's start over."


async def _forget_me(ctx: CommandContext) -> str:
    msg = ctx.message
    if tuple(a.lower() for a in ctx.args) != ("confirm",):
        ctx.confirmations.ask("forget me", msg.platform, msg.author_id)
        minutes = ctx.confirmations.ttl / 60
        return (
            f"This deletes every message of yours I have stored, in every {msg.platform} conversation, "
            f"and my replies to them. Send `forget me confirm` within {minutes:.0f} minutes to go ahead."
        )
    if not ctx.confirmations.confirm("forget me", msg.platform, msg.author_id):
        return "Send `forget me` first: I'll tell you what it deletes and ask you to confirm."
    target = f"{msg.platform}:{msg.author_id}"
    deleted = await ctx.store.delete_user_turns(
        msg.platform, msg.author_id, audit=ctx.audit("forget me", target)
    )
    return f"Done: I deleted {deleted} stored messages (yours and my replies to them)."


async def _purge(ctx: CommandContext) -> str:
    if not ctx.args:
        return (
            "Usage: `purge <user id>` deletes that user's stored messages in every conversation you "
            "administer."
        )
    msg = ctx.message
    # The engine runs admin commands only for a scope covering this conversation; never wider than it.
    scope = msg.admin_scope or msg.channel_key
    # Adapters list the users a message mentions, so a pasted @mention names its user on any platform.
    user = ctx.message.mentioned_users[0] if ctx.message.mentioned_users else ctx.args[0]
    target = f"{msg.platform}:{user}"
    deleted = await ctx.store.delete_user_turns(
        msg.platform, user, audit=ctx.audit("purge", target), within=scope
    )
    return (
        f"Purged {target}: {deleted} stored messages deleted (theirs and my replies to them) "
        f"in the conversations under {scope}."
    )


async def _help(ctx: CommandContext) -> str:
    lines = ["Talk to me in plain words. Commands:"]
    for command in COMMANDS:
        suffix = " (admins only)" if command.admin_only else ""
        usage = f" {command.usage}" if command.usage else ""
        lines.append(f"  {command.name}{usage} — {command.help}{suffix}")
    return "\n".join(lines)


async def _status(ctx: CommandContext) -> str:
    turns = await ctx.store.count_turns(ctx.message.channel_key)
    info = ctx.model
    return (
        f"Model: {info.public_name} · backend {info.backend} · {', '.join(info.details())} · "
        f"{ctx.safety.describe(ctx.message.channel_key)} · turns stored in this conversation: {turns}"
    )


COMMANDS: tuple[Command, ...] = (
    Command("help", "list the commands", admin_only=False, handler=_help),
    Command(
        "status",
        "show the model, its quantization, this conversation's stored turns and the safety filter",
        False,
        _status,
    ),
    Command("reset", "forget this conversation's history", admin_only=True, handler=_reset),
    Command(
        "forget me",
        "delete everything of yours I have stored, everywhere (asks to confirm)",
        admin_only=False,
        handler=_forget_me,
        args=r"(confirm)?",
        usage="[confirm]",
    ),
    Command(
        "purge",
        "delete a user's stored messages in every conversation you administer",
        admin_only=True,
        handler=_purge,
        args=r"(\S+)?",
        usage="<user id>",
    ),
)
# Longest names first, so that a command whose name starts with another's is found.
_BY_LENGTH = sorted(COMMANDS, key=lambda c: -len(c.name.split()))


def parse_invocation(text: str) -> tuple[Command, tuple[str, ...]] | None:
    """The command `text` invokes and its arguments, or None if it is ordinary chat."""
    body = text.strip()
    if body[:1] in COMMAND_PREFIXES:
        body = body.lstrip(COMMAND_PREFIXES)
    words = body.split()
    for command in _BY_LENGTH:
        name = command.name.split()
        if [w.casefold() for w in words[: len(name)]] != name:
            continue
        found = re.fullmatch(command.args, " ".join(words[len(name) :]), flags=re.IGNORECASE)
        if found is not None:
            return command, tuple(g for g in found.groups() if g is not None)
    return None


def parse_command(text: str) -> Command | None:
    """The command `text` invokes, or None if it is ordinary chat."""
    invocation = parse_invocation(text)
    return invocation[0] if invocation else None
