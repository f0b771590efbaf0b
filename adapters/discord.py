"""The Discord adapter: discord.py's sharded client, translating messages and slash commands for the engine.

The bot answers in a server channel when mentioned or replied to, in DMs, and every message in the channels
listed in `discord.always_answer_channel_ids` (and their threads). Each channel, thread and DM is one
conversation: `discord:<guild>:<channel>[:<thread>]`, `discord:dm:<channel>`. Answers are replies to the
user's message, split to Discord's 2,000-character limit with code blocks intact. `/reset`, `/help` and
`/status` are slash commands generated from the core's command table; the same words after a mention work
too. discord.py's HTTP client keeps handling rate limits (429s) itself.

Admin commands act within what the author administers: members with Manage Server or Administrator in a
server administer that server (`discord:<guild>`), the ids in `discord.admin_user_ids` the whole platform
(`discord`, DMs included). A message naming a server the client has not cached (not yet sent, or being
re-sent after an outage) is still that server's: keyed under it, mention required, its access rules applied.

Discord does not deliver a message again to a bot that was down, or that stopped between receiving it and
writing it to the inbox. So on every fresh gateway session the bot reads what it missed: in each channel it
took a message on in the last `inbox.recover_max_age_seconds`, the messages after the last one it took on;
in any other channel or thread whose newest message is newer than those (Discord sends each channel's
`last_message_id`), and in the DM channel of anyone it took a message from in that time, the messages since.
They are answered like live ones; the inbox refuses those it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import zlib
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import timedelta
from typing import Any

import discord
from discord import app_commands

from adapters.message_split import split_message
from bot.config import Config, DiscordConfig, secret_from_env
from bot.core.commands import COMMANDS
from bot.core.engine import ChatEngine
from bot.core.keyed_lock import KeyedLock, Reservation
from bot.core.message import IncomingMessage, PartialDelivery, Send, conversation_key
from bot.errors import ConfigError, DialobotError
from bot.ops.readiness import readiness

logger = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
SLASH_DESCRIPTION_LIMIT = 100
DEFER_AFTER_SECONDS = 2.0
"""A slash command not answered this fast is deferred ("thinking..."); the answer then is a follow-up."""
FORBIDDEN_RETRY_SECONDS = 600.0
"""After a 403 in a channel, its messages are skipped (no model call) this long before the bot tries again."""
DEVELOPER_PORTAL = "https://discord.com/developers/applications"
DEFAULT_API_URL = DiscordConfig.model_fields["api_url"].default
INVITE_SCOPES = ("bot", "applications.commands")
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, read_message_history=True
)
# Model output must never ping @everyone, roles or users; replying may notify the person answered.
ALLOWED_MENTIONS = discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True)
ANSWERED_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})
CATCH_UP_LIMIT = 100
"""Messages read per channel when catching up after a restart (one history request)."""
CATCH_UP_CHANNELS = 50
"""Channels per server read back for being active, beyond those the inbox names (bounded REST calls)."""


def intents() -> discord.Intents:
    """Servers, channels, threads, messages and their text: message content is a privileged intent."""
    wanted = discord.Intents.none()
    wanted.guilds = wanted.guild_messages = wanted.dm_messages = wanted.message_content = True
    return wanted


def channel_key(guild_id: int | None, channel: Any) -> str:
    """The conversation key: `discord:<guild>:<channel>[:<thread>]`, or `discord:dm:<channel>` for a DM."""
    if guild_id is None:
        return conversation_key("discord", "dm", channel.id)
    if isinstance(channel, discord.Thread):
        return conversation_key("discord", guild_id, channel.parent_id, channel.id)
    return conversation_key("discord", guild_id, channel.id)


class DiscordBot(discord.AutoShardedClient):
    """The bot in many servers from one process: turns events into `IncomingMessage`s for the engine."""

    def __init__(self, engine: ChatEngine, settings: DiscordConfig, **options: Any) -> None:
        if settings.shard_ids is not None:
            if settings.shard_count is None:
                raise ConfigError("discord.shard_ids: set discord.shard_count as well")
            if any(not 0 <= shard < settings.shard_count for shard in settings.shard_ids):
                raise ConfigError(f"discord.shard_ids: each id must be from 0 to {settings.shard_count - 1}")
        if settings.api_url != DEFAULT_API_URL:  # a local fake: discord.py keeps the base URL on its class
            discord.http.Route.BASE = settings.api_url.rstrip("/")
        # The bot has no voice: don't warn at start-up that the voice libraries are missing.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(
            intents=intents(),
            shard_count=settings.shard_count,
            shard_ids=settings.shard_ids,
            allowed_mentions=ALLOWED_MENTIONS,
            chunk_guilds_at_startup=False,
            **options,
        )
        self.engine = engine
        self.settings = settings
        # Fall back to global commands for an interaction naming a server whose commands weren't synced here.
        self.tree = app_commands.CommandTree(self, fallback_to_global=True)
        self.defer_after = DEFER_AFTER_SECONDS
        self._admin_ids = frozenset(settings.admin_user_ids)
        self._always_answer_ids = frozenset(settings.always_answer_channel_ids)
        self._forbidden_until: dict[int, float] = {}
        self._answering: set[asyncio.Task] = set()
        self._arrivals = KeyedLock()
        self._received_before_start: list[IncomingMessage] | None = None
        self._caught_up: set[int] = set()  # channels read back (or being read) in this session
        self._catch_up_floor = 0  # this session reads back messages newer than this id in any active channel
        self._taken_recently: set[int] = set()  # ids of the messages taken on since the floor, before now
        for command in (c for c in COMMANDS if not c.takes_words):  # the others are typed after a mention
            self.tree.add_command(
                app_commands.Command(
                    name=command.name,
                    description=command.help[:SLASH_DESCRIPTION_LIMIT],
                    callback=self._slash_callback(command.name),
                )
            )

    async def run_until_closed(self, token: str) -> None:
        """Log in, connect every shard and serve until closed; start-up problems become one-line errors."""
        try:
            async with self:
                await self.start(token)
        except discord.LoginFailure:
            raise DialobotError(
                f"discord: Discord rejected the token in ${self.settings.token_env}"
            ) from None
        except discord.PrivilegedIntentsRequired:
            where = (
                f"{DEVELOPER_PORTAL}/{self.application_id}/bot" if self.application_id else DEVELOPER_PORTAL
            )
            logger.error(
                "Discord refused the Message Content intent: enable 'Message Content Intent' under "
                "'Privileged Gateway Intents' at %s, then restart",
                where,
            )
            raise DialobotError(
                "discord: the Message Content intent is not enabled (see the log above)"
            ) from None

    async def setup_hook(self) -> None:
        """After login, before the gateway: answer the messages left unanswered by the last run (before any
        new message arrives, so they come first in their channels), log the invite URL and sync the slash
        commands."""
        await self.engine.recover("discord", self.sender_for)
        self._received_before_start = await self.engine.recently_received("discord")
        invite = discord.utils.oauth_url(
            self.application_id, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES
        )
        logger.info("invite the bot to a server with %s", invite)
        guild = (
            discord.Object(int(self.settings.command_guild_id)) if self.settings.command_guild_id else None
        )
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        try:
            synced = await self.tree.sync(guild=guild)
        except discord.HTTPException as exc:
            logger.error("could not sync the slash commands (chat still works): %s", exc)
            return
        where = f"to server {guild.id}" if guild else "globally"
        logger.info("synced %d slash commands %s", len(synced), where)

    async def close(self) -> None:
        """Stop answering (answers in progress are cancelled and never stored), then disconnect."""
        answering, self._answering = self._answering - {asyncio.current_task()}, set()
        for task in answering:
            task.cancel()
        await asyncio.gather(*answering, return_exceptions=True)
        await super().close()

    @contextmanager
    def _answering_task(self) -> Iterator[None]:
        task = asyncio.current_task()
        self._answering.add(task)
        try:
            yield
        finally:
            self._answering.discard(task)

    async def on_ready(self) -> None:
        logger.info(
            "connected to Discord as %s (id %s): %d servers, shards %s of %s",
            self.user,
            self.user.id,
            len(self.guilds),
            sorted(self.shards),
            self.shard_count,
        )
        readiness.ready("discord")

    async def on_connect(self) -> None:
        """A new gateway session (READY; a resumed one gets its missed events from Discord): read back what
        arrived while the bot was away. The inbox refuses what it has already."""
        received, self._received_before_start = self._received_before_start, None
        if received is None:  # a later session: what was taken on until now
            received = await self.engine.recently_received("discord")
        # Every channel is read back over the whole recovery age, skipping what was taken on: a message taken
        # on says nothing of the ones before it, nor of other channels, since an earlier session may have
        # stopped (killed, say) before it had read them back.
        window = timedelta(seconds=self.engine.config.inbox.recover_max_age_seconds)
        self._catch_up_floor = discord.utils.time_snowflake(discord.utils.utcnow() - window)
        self._taken_recently = {int(m.message_id) for m in received if (m.message_id or "").isdigit()}
        self._caught_up = set()
        # Each channel's place is taken now, before the connection's first event is handled: what was
        # missed is taken on first.
        for channel_id, guild_id in _channels_taken_on(received).items():
            self._read_back(channel_id, guild_id)
        # Discord lists no DM channels to a bot; the people it talked with recently may have written to it
        # directly while it was away (their DM channel is opened, or found, by id: no message is sent).
        for author in _recent_authors(received)[:CATCH_UP_CHANNELS]:
            try:  # the raw channel: it carries `last_message_id`, which discord.py's DMChannel drops
                dm = await self.http.start_private_message(author)
            except discord.HTTPException as exc:
                logger.debug("no DM channel with %s to read back: %s", author, exc)
                continue
            newest = int(dm.get("last_message_id") or 0)
            if int(dm["id"]) not in self._caught_up and newest > self._catch_up_floor:
                self._read_back(int(dm["id"]), None)

    async def on_guild_available(self, guild: discord.Guild) -> None:
        """A server of this session, with its channels: read back the active ones the inbox did not name (a
        conversation whose every message arrived while the bot was away)."""
        channels = [*guild.text_channels, *guild.threads]
        active = [
            c
            for c in channels
            if c.id not in self._caught_up and (c.last_message_id or 0) > self._catch_up_floor
        ]
        for channel in active[:CATCH_UP_CHANNELS]:
            self._read_back(channel.id, guild.id)

    def _read_back(self, channel_id: int, guild_id: int | None) -> None:
        self._caught_up.add(channel_id)
        place = self._arrivals.reserve(str(channel_id))
        task = asyncio.create_task(self._catch_up(channel_id, guild_id, place))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _catch_up(self, channel_id: int, guild_id: int | None, place: Reservation) -> None:
        """Take on the channel's messages since the floor that never reached the inbox, in order: the newest
        `CATCH_UP_LIMIT` of them (one request), should people have written more while the bot was away."""
        answers: list[tuple[asyncio.Task, AsyncExitStack]] = []
        with self.engine.tracking():
            async with place:
                channel = self.get_channel(channel_id) or self.get_partial_messageable(
                    channel_id, guild_id=guild_id
                )
                try:
                    recent = [
                        m
                        async for m in channel.history(
                            after=discord.Object(self._catch_up_floor),
                            limit=CATCH_UP_LIMIT,
                            oldest_first=False,
                        )
                    ]
                except discord.HTTPException as exc:
                    logger.warning(
                        "could not read channel %s for messages missed while away: %s", channel_id, exc
                    )
                    return
                if len(recent) == CATCH_UP_LIMIT:
                    logger.warning(
                        "channel %s: read back only its newest %d messages; older ones missed while away "
                        "are not answered",
                        channel_id,
                        CATCH_UP_LIMIT,
                    )
                missed = [m for m in reversed(recent) if m.id not in self._taken_recently]
                for message in missed:
                    typing = AsyncExitStack()
                    answer = await self._take_on(message, typing, held=True)
                    if answer is None:
                        await typing.aclose()
                    else:
                        answers.append((answer, typing))
            if answers:
                logger.info("channel %s: answering %d messages missed while away", channel_id, len(answers))
            for answer, typing in answers:
                async with typing:
                    await answer

    async def on_disconnect(self) -> None:
        readiness.not_ready("discord", "disconnected from the gateway; reconnecting")

    async def on_resumed(self) -> None:
        readiness.ready("discord")

    async def on_message(self, message: discord.Message) -> None:
        """Answer a message addressed to the bot; ignore everything else."""
        async with AsyncExitStack() as typing:  # the typing indicator lasts until the answer is out
            # A shutdown's drain counts the message from here: its channel lookup and typing indicator
            # included; then the answer's task is counted.
            with self.engine.tracking():
                answer = await self._take_on(message, typing)
            if answer is not None:
                with self._answering_task():
                    await answer

    async def _take_on(
        self, message: discord.Message, typing: AsyncExitStack, held: bool = False
    ) -> asyncio.Task | None:
        """The task answering `message`, or None if it is not addressed to the bot or was taken on before.

        `held`: the caller holds the channel's place in arrival order already."""
        author = message.author
        if author.id == self.user.id or message.type not in ANSWERED_TYPES:
            return None
        if (author.bot or message.webhook_id) and not self.settings.answer_bots:
            return None
        channel = message.channel
        # People often pick the bot's own role from Discord's mention list instead of the bot user.
        role = message.guild.self_role if message.guild else None
        mentions = rf"<@!?{self.user.id}>" + (rf"|<@&{role.id}>" if role else "")
        mentioned = self._mentioned(message, role)
        # A server missing from the cache still names itself in the event: it is never a DM.
        guild_id = message.guild.id if message.guild else getattr(channel, "guild_id", None)
        is_direct = guild_id is None
        if not (mentioned or is_direct or self._always_answers(channel)):
            return None
        text = re.sub(rf"\s*(?:{mentions})\s*", " ", message.content).strip()
        if not text and not (mentioned or is_direct):
            return None  # an attachment alone in an always-answer channel: nothing to answer, no hint wanted
        if self._forbidden_until.get(channel.id, 0.0) > time.monotonic():
            logger.debug("skipping a message in %s: no permission to send there", channel.id)
            return None
        # The steps before the engine (channel lookup, inbox write, typing) finish in any order: a
        # channel's messages pass them one at a time, so they reach the engine, and are answered, in
        # arrival order.
        async with contextlib.nullcontext() if held else self._arrivals.hold(str(channel.id)):
            incoming = IncomingMessage(
                platform="discord",
                channel_key=channel_key(guild_id, await self._resolve(channel, guild_id)),
                author_id=str(author.id),
                author_name=author.display_name,
                text=text,
                admin_scope=self._admin_scope(author, guild_id, getattr(author, "guild_permissions", None)),
                is_direct=is_direct,
                message_id=str(message.id),
                mentioned_users=tuple(str(u) for u in message.raw_mentions if u != self.user.id),
                route={"channel": str(channel.id), "guild": str(guild_id or "")},
            )
            # Written to the inbox (and a replayed MESSAGE_CREATE refused) before anything else.
            accepted = await self.engine.accept(incoming)
            if accepted is None:
                return None
            try:
                await typing.enter_async_context(channel.typing())
            except discord.Forbidden:
                self._note_forbidden(channel.id)
                await self.engine.give_up(accepted, "no permission to post in the channel (HTTP 403)")
                return None
            except discord.HTTPException as exc:
                logger.debug("no typing indicator in %s: %s", incoming.channel_key, exc)
            # Tasks start in creation order, and the engine queues a channel's messages as they start.
            return self.engine.answer_soon(accepted, self._reply_sender(message))

    def _mentioned(self, message: discord.Message, role: discord.Role | None) -> bool:
        """Mentioned by id or by the bot's own role, or the message replies to one of the bot's messages."""
        if self.user.id in message.raw_mentions or (
            role is not None and role.id in message.raw_role_mentions
        ):
            return True
        replied_to = message.reference.resolved if message.reference else None
        return isinstance(replied_to, discord.Message) and replied_to.author.id == self.user.id

    def _reply_sender(self, message: discord.Message) -> Send:
        # Still post the answer if the user deleted their message meanwhile, instead of failing the reply.
        return self._sender(message.channel, message.to_reference(fail_if_not_exists=False), message.id)

    def sender_for(self, message: IncomingMessage) -> Send | None:
        """How to answer a message from the inbox after a restart: a reply to it in its channel."""
        channel_id = message.route.get("channel")
        if not channel_id or not message.message_id or not message.message_id.isdigit():
            return None  # a slash command: its interaction expired with the process that got it
        guild = message.route.get("guild") or None
        channel = self.get_partial_messageable(int(channel_id), guild_id=int(guild) if guild else None)
        reference = discord.MessageReference(
            message_id=int(message.message_id),
            channel_id=int(channel_id),
            guild_id=int(guild) if guild else None,
            fail_if_not_exists=False,
        )
        return self._sender(channel, reference, int(message.message_id))

    def _sender(self, channel: Any, reference: discord.MessageReference, answered_id: int) -> Send:
        async def send(text: str) -> list[str]:
            posted: list[tuple[str, str]] = []
            try:
                for number, chunk in enumerate(split_message(text, MESSAGE_LIMIT)):
                    # The nonce makes Discord refuse a second copy of the same part (a reply sent again
                    # after a restart that came between posting it and recording it); it names the text
                    # too, so that the restart notice and the answer are two messages.
                    nonce = f"{answered_id}.{number}.{zlib.crc32(chunk.encode()) % 1000}"  # at most 25
                    sent = await channel.send(
                        chunk, reference=reference if number == 0 else None, nonce=nonce
                    )
                    posted.append((str(sent.id), chunk))
            except discord.Forbidden as exc:
                self._note_forbidden(channel.id)
                if posted:
                    raise PartialDelivery(posted, exc) from exc
                raise
            except Exception as exc:
                if posted:
                    raise PartialDelivery(posted, exc) from exc
                raise
            self._forbidden_until.pop(channel.id, None)
            return [i for i, _ in posted]

        return send

    def _slash_callback(self, word: str):
        async def callback(interaction: discord.Interaction) -> None:
            await self._on_slash_command(interaction, word)

        callback.__name__ = f"slash_{word}"
        return callback

    async def _on_slash_command(self, interaction: discord.Interaction, word: str) -> None:
        """Run `/word` as the command `word`, answering in the interaction's response."""
        responding = asyncio.Lock()

        async def defer_when_slow() -> None:
            # Discord drops an interaction not answered within 3 s, and the channel may be busy generating.
            await asyncio.sleep(self.defer_after)
            async with responding:
                if not interaction.response.is_done():
                    try:
                        await interaction.response.defer(thinking=True)
                    except discord.HTTPException as exc:
                        logger.warning("could not defer /%s: %s", word, exc)

        async def send(text: str) -> None:
            async with responding:
                for chunk in split_message(text, MESSAGE_LIMIT):
                    if interaction.response.is_done():
                        await interaction.followup.send(chunk)
                    else:
                        await interaction.response.send_message(chunk)

        deferring = asyncio.create_task(defer_when_slow())
        try:
            channel = interaction.channel or self.get_partial_messageable(interaction.channel_id)
            incoming = IncomingMessage(
                platform="discord",
                channel_key=channel_key(
                    interaction.guild_id, await self._resolve(channel, interaction.guild_id)
                ),
                author_id=str(interaction.user.id),
                author_name=interaction.user.display_name,
                text=word,
                admin_scope=self._admin_scope(
                    interaction.user,
                    interaction.guild_id,
                    interaction.permissions if interaction.guild_id else None,
                ),
                is_direct=interaction.guild_id is None,
                message_id=f"interaction:{interaction.id}",
            )
            with self._answering_task():
                await self.engine.handle(incoming, send)
        finally:
            deferring.cancel()

    async def _resolve(self, channel: Any, guild_id: int | None) -> Any:
        """The channel itself when the cache only knows its id: a thread's key needs its parent."""
        if guild_id is None or not isinstance(channel, discord.PartialMessageable):
            return channel
        try:
            return await self.fetch_channel(channel.id)
        except discord.HTTPException as exc:
            logger.warning("could not look up channel %s, treating it as a channel: %s", channel.id, exc)
            return channel

    def _always_answers(self, channel: Any) -> bool:
        ids = {str(channel.id)}
        if isinstance(channel, discord.Thread):
            ids.add(str(channel.parent_id))
        return not ids.isdisjoint(self._always_answer_ids)

    def _admin_scope(
        self, user: discord.abc.User, guild_id: int | None, permissions: discord.Permissions | None
    ) -> str | None:
        """What `user` administers: everything on Discord for a configured id; the server the message is in
        for a member with Manage Server or Administrator there; nothing otherwise (DMs included)."""
        if str(user.id) in self._admin_ids:
            return "discord"
        if guild_id is None or permissions is None:
            return None
        if permissions.manage_guild or permissions.administrator:
            return conversation_key("discord", guild_id)
        return None

    def _note_forbidden(self, channel_id: int) -> None:
        if channel_id not in self._forbidden_until:
            logger.warning(
                "no permission to send messages in channel %s (HTTP 403); skipping it for %.0f minutes",
                channel_id,
                FORBIDDEN_RETRY_SECONDS / 60,
            )
        self._forbidden_until[channel_id] = time.monotonic() + FORBIDDEN_RETRY_SECONDS


class DiscordAdapter:
    """The `Adapter` for Discord: the token from the environment, and the sharded client."""

    name = "discord"

    def __init__(self, engine: ChatEngine, config: Config) -> None:
        self.settings = config.discord
        self.client = DiscordBot(engine, self.settings)

    async def run(self) -> None:
        token = secret_from_env("discord.token_env", self.settings.token_env)
        await self.client.run_until_closed(token)

    async def stop(self) -> None:
        await self.client.close()


def create(engine: ChatEngine, config: Config) -> DiscordAdapter:
    return DiscordAdapter(engine, config)


async def serve(engine: ChatEngine, config: Config) -> None:
    """Run the Discord bot until its connection ends or the task is cancelled."""
    await DiscordAdapter(engine, config).run()


def _channels_taken_on(received: list[IncomingMessage]) -> dict[int, int | None]:
    """The channels the bot took a message on recently, each with its server (None: a DM)."""
    channels: dict[int, int | None] = {}
    for message in received:
        channel, guild = message.route.get("channel", ""), message.route.get("guild", "")
        if channel.isdigit() and (message.message_id or "").isdigit():  # not a slash command
            channels[int(channel)] = int(guild) if guild else None
    return channels


def _recent_authors(received: list[IncomingMessage]) -> list[int]:
    """The people the bot took a message from recently, most recent first."""
    authors: dict[int, None] = {}
    for message in reversed(received):
        if message.author_id.isdigit():
            authors.setdefault(int(message.author_id))
    return list(authors)
