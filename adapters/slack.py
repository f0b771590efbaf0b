"""The Slack adapter: mentions in channels and direct messages, over Socket Mode or the HTTP Events API.

A thin translator on slack-bolt's `AsyncApp`: a Slack event becomes an `IncomingMessage`, the engine answers
through `send`, which posts with `chat.postMessage`. An event is written to the engine's inbox before it is
acknowledged (a re-delivery of the same message is refused there, so it is answered once), then answered in
a background task; a message left unanswered by a stop is answered by the next start, in its thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncBoltContext, AsyncBoltRequest
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped, warning_token_skipped
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.message_split import split_message
from bot.config import Config, SlackConfig, secret_from_env
from bot.core.commands import parse_command
from bot.core.engine import SHUTTING_DOWN, Accepted, ChatEngine
from bot.core.message import IncomingMessage, PartialDelivery, Send, conversation_key
from bot.errors import DialobotError
from bot.ops.readiness import readiness

logger = logging.getLogger(__name__)

MESSAGE_LIMIT = 3000
"""Characters per posted message; Slack advises at most 4,000 in `text` and truncates far beyond that."""
MIN_SPLIT = 64
"""The smallest piece `split_escaped` asks `split_message` for (it needs room for code fences)."""
RATE_LIMIT_RETRIES = 3
SERVER_ERROR_RETRIES = 2
"""`chat.postMessage` and the other calls are retried this often after an HTTP 500 or 503 from Slack."""
REPLY_EVENT_TYPE = "dialobot_reply"
"""The message metadata on every reply: which inbox message it answers (`inbox`) and which part it is."""
ADMIN_CACHE_SECONDS = 600.0
SHUTDOWN_GRACE_SECONDS = 5.0
EVENTS_PATH = "/slack/events"

# Subtypes that are still a person writing; everything else (message_changed, message_deleted, bot_message,
# channel_join, ...) is not addressed to the bot.
USER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})

# AsyncApp reads $SLACK_BOT_TOKEN by itself and, handed our client too, warns that the client's token wins.
# It is the same token: drop the warning rather than confuse whoever reads the start-up log.
# The same goes for the warning that our own `authorize` makes the token redundant: it is the client's token.
_TOKEN_SKIPPED = {warning_client_prioritized_and_token_skipped(), warning_token_skipped()}
logging.getLogger("slack_bolt.AsyncApp").addFilter(lambda record: record.getMessage() not in _TOKEN_SKIPPED)


def read_secret(config: SlackConfig, key: str) -> str:
    """The value of the environment variable that config key `key` (such as `bot_token_env`) names."""
    return secret_from_env(f"slack.{key}", getattr(config, key))


def clean_text(text: str, bot_user_id: str | None) -> str:
    """The user's words for the model: the bot's own mention removed, Slack's `&amp;` escapes undone."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>[:,]?", " ", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(text.split())


def mentioned_users(text: str, bot_user_id: str | None) -> tuple[str, ...]:
    """The user ids of `<@U123>` / `<@U123|name>` mentions in raw Slack text, the bot's own left out."""
    found = re.findall(r"<@([A-Z0-9]+)(?:\|[^>]*)?>", text)
    return tuple(user for user in found if user != bot_user_id)


def escape_text(text: str) -> str:
    # Slack reads <...> as control sequences: a model echoing "<!channel>" would otherwise ping everyone.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def split_escaped(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """`text` escaped for Slack, as messages of at most `limit` characters each.

    Split first, escape each piece after: escaping first would let a cut fall inside an entity (`xyz&` |
    `lt;xyz`), which Slack shows as garbage. Escaping lengthens a piece (`<` becomes 4 characters), so a
    piece that outgrows the limit is split again, in proportion, until every escaped piece fits."""
    return [message for piece in split_message(text, limit) for message in _fitted(piece, limit)]


def _fitted(piece: str, limit: int) -> list[str]:
    escaped = escape_text(piece)
    if len(escaped) <= limit:
        return [escaped]
    size = max(MIN_SPLIT, min(len(piece) - 1, len(piece) * limit // len(escaped)))
    return [message for part in split_message(piece, size) for message in _fitted(part, limit)]


def unescape_text(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _is_direct(event: dict) -> bool:
    """Whether the event happened in a DM (`im`); DM channel ids start with D."""
    return event.get("channel_type", "im" if event.get("channel", "").startswith("D") else "") == "im"


def make_client(token: str, api_url: str) -> AsyncWebClient:
    """A Web API client that waits out rate limits (HTTP 429, `Retry-After`) instead of failing."""
    return AsyncWebClient(
        token=token,
        # A base URL without the trailing slash resolves methods wrongly (urljoin drops its last segment).
        base_url=api_url.rstrip("/") + "/",
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            AsyncServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES),
        ],
    )


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a reply goes: the channel, and the thread to answer in (None: the channel itself)."""

    channel: str
    thread_ts: str | None


class SlackAdapter:
    """The bolt app, its listeners, and the background tasks answering the events."""

    def __init__(
        self, engine: ChatEngine, config: Config, client: AsyncWebClient, signing_secret: str = ""
    ) -> None:
        self.engine = engine
        self.slack = config.slack
        self.client = client
        if not any(isinstance(h, AsyncRateLimitErrorRetryHandler) for h in client.retry_handlers):
            client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES))
        if not any(isinstance(h, AsyncServerErrorRetryHandler) for h in client.retry_handlers):
            client.retry_handlers.append(AsyncServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES))
        # The listener only queues a task, so processing "before the response" still acknowledges at once,
        # and the task exists (and is ours to await on shutdown) by the time Slack gets the ack.
        self._auth: Any = None
        """`auth.test`'s answer for the bot token, asked once (at start-up by `check_auth`) and reused."""
        self.app = AsyncApp(
            name="dialobot",
            client=self.client,
            signing_secret=signing_secret,  # bolt checks it on HTTP requests, not in Socket Mode
            process_before_response=True,
            # Bolt's default asks `auth.test` again for the first event: seconds when Slack is slow, and
            # Slack gives an event 3 s to be acknowledged. The answer from start-up serves every event.
            authorize=self._authorizer(),
        )
        self.app.event("app_mention")(self._on_event)
        self.app.event("message")(self._on_event)
        self._tasks: set[asyncio.Task] = set()
        self._in_order = asyncio.Lock()
        self._bot_user_id: str | None = None
        self._admins: dict[str, tuple[bool, float]] = {}
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None

    # ---- connection ----

    async def check_auth(self) -> None:
        """Fail at start-up, with one line, if the bot token is refused; keep the answer for every event."""
        try:
            auth = self._auth = await self.client.auth_test()
        except SlackApiError as exc:
            raise DialobotError(f"slack: the bot token was refused: {exc.response.get('error')}") from None
        logger.info(
            "connected to Slack team %s as %s (%s)", auth.get("team"), auth.get("user"), auth.get("user_id")
        )
        self._bot_user_id = auth.get("user_id")

    async def recover(self) -> None:
        """Answer the messages the last run took on but never answered; before new events arrive."""
        await self.engine.recover("slack", self.sender_for, self.posted_replies)

    def sender_for(self, message: IncomingMessage) -> Send | None:
        """How to answer a message from the inbox after a restart: where it would have been answered."""
        channel = message.route.get("channel")
        if not channel or not message.message_id:
            return None
        return self._sender(_Target(channel, message.route.get("thread_ts") or None), message.message_id)

    async def posted_replies(self, message: IncomingMessage) -> list[tuple[str, str]]:
        """The parts of a reply to `message` already in the conversation (a stop came between posting them
        and recording them): found by the metadata every reply carries. The restart notice is no reply."""
        channel, thread = message.route.get("channel"), message.route.get("thread_ts") or None
        oldest = message.route.get("ts") or "0"
        if thread:
            found = await self.client.conversations_replies(
                channel=channel, ts=thread, oldest=oldest, include_all_metadata=True, limit=200
            )
        else:
            found = await self.client.conversations_history(
                channel=channel, oldest=oldest, include_all_metadata=True, limit=200
            )
        parts: list[tuple[int, str, str]] = []
        for posted in found.get("messages") or []:
            metadata = posted.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") != REPLY_EVENT_TYPE or payload.get("inbox") != message.message_id:
                continue
            text = unescape_text(posted.get("text", ""))
            if text != SHUTTING_DOWN:
                parts.append((int(payload.get("part", 0)), str(posted.get("ts", "")), text))
        return [(ts, text) for _, ts, text in sorted(parts)]

    async def start_socket_mode(self, app_token: str) -> None:
        """Open the Socket Mode WebSocket; returns once connected."""
        self._socket = AsyncSocketModeHandler(self.app, app_token, web_client=self.client)
        try:
            # Ask for the WebSocket URL ourselves: the client would retry a refused app token forever.
            self._socket.client.wss_uri = await self._socket.client.issue_new_wss_url()
        except SlackApiError as exc:
            raise DialobotError(f"slack: the app token was refused: {exc.response.get('error')}") from None
        await self._socket.connect_async()
        logger.info("Slack Socket Mode connected")

    async def start_http(self, host: str, port: int) -> int:
        """Serve the Events API endpoint on `host:port` (0: any free port); returns the bound port."""
        self._runner = web.AppRunner(self.app.web_app(path=EVENTS_PATH, port=port), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0][1]
        logger.info("Slack Events API endpoint on http://%s:%d%s", host, bound, EVENTS_PATH)
        return bound

    async def close(self) -> None:
        """Stop receiving, give in-flight answers a moment to be sent, cancel the rest."""
        if self._socket is not None:
            await self._socket.close_async()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=SHUTDOWN_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Wait until every event received so far has been answered (or dropped)."""
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)

    def _authorizer(self) -> Callable[..., Awaitable[AuthorizeResult]]:
        """Bolt's authorization of each event: the bot token's `auth.test` answer, asked only once.

        A plain function, not a method: bolt passes it the arguments its parameter names ask for."""

        async def authorize(user_id: str | None = None) -> AuthorizeResult:
            if self._auth is None:
                self._auth = await self.client.auth_test()
            auth = self._auth
            return AuthorizeResult(
                enterprise_id=auth.get("enterprise_id"),
                team_id=auth.get("team_id"),
                team=auth.get("team"),
                url=auth.get("url"),
                bot_id=auth.get("bot_id"),
                bot_user_id=auth.get("user_id"),
                bot_token=self.client.token,
                user_id=user_id,
            )

        return authorize

    # ---- events ----

    async def _on_event(
        self, body: dict, event: dict, context: AsyncBoltContext, request: AsyncBoltRequest
    ) -> None:
        if not self._addressed_to_bot(event, context.bot_user_id):
            return
        team = context.team_id or body.get("team_id") or ""
        event_id = body.get("event_id") or f"{event.get('channel')}:{event.get('ts')}"
        # Re-sent events carry `x-slack-retry-num` (lower-cased, list-valued); Socket Mode originals say "0".
        retry = request.headers.get("x-slack-retry-num", ["0"])[0]
        if retry != "0":
            reason = request.headers.get("x-slack-retry-reason", ["?"])[0]
            logger.info("Slack re-sent event %s (retry %s: %s)", event_id, retry, reason)
        # Counted by a shutdown's drain from here; written to the inbox before Slack gets its ack (the
        # listener's return acknowledges), so an event is either in the inbox or sent again by Slack.
        with self.engine.tracking():
            async with self._in_order:
                # Events reach the engine in the order Slack delivered them: inbox writes run one at a time
                # (concurrent database writes finish in any order).
                accepted = await self._accept(team, event_id, event, context.bot_user_id)
                if accepted is not None:
                    self._spawn(self._answer(event_id, accepted))

    def _addressed_to_bot(self, event: dict, bot_user_id: str | None) -> bool:
        if event.get("bot_id") or event.get("subtype") not in USER_SUBTYPES:
            return False
        if not event.get("user") or event["user"] == bot_user_id:
            return False
        if event.get("type") == "app_mention":
            # A mention inside a DM also arrives as a `message` event; answer that one only.
            return not _is_direct(event)
        return _is_direct(event)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(
        self, team: str, event_id: str, event: dict, bot_user_id: str | None
    ) -> tuple[Accepted, _Target] | None:
        target, channel_key = self._route(team, event)
        raw = event.get("text", "")
        text = clean_text(raw, bot_user_id)
        command = parse_command(text)
        admin_scope = await self._admin_scope(team, event["user"]) if command and command.admin_only else None
        message = IncomingMessage(
            platform="slack",
            channel_key=channel_key,
            author_id=event["user"],
            text=text,
            admin_scope=admin_scope,
            is_direct=_is_direct(event),
            # One message, whichever event (and retry) brings it: the inbox refuses it a second time.
            message_id=f"{team}:{event['channel']}:{event.get('ts') or event_id}",
            mentioned_users=mentioned_users(raw, bot_user_id),
            route={"channel": target.channel, "thread_ts": target.thread_ts or "", "ts": event.get("ts", "")},
        )
        accepted = await self.engine.accept(message)
        return None if accepted is None else (accepted, target)

    async def _answer(self, event_id: str, accepted: tuple[Accepted, _Target]) -> None:
        try:
            message_id = accepted[0].message.message_id or event_id
            await self.engine.answer(accepted[0], self._sender(accepted[1], message_id))
        except Exception:
            logger.exception("failed to answer Slack event %s", event_id)

    def _route(self, team: str, event: dict) -> tuple[_Target, str]:
        """Where to reply, and the conversation's channel key `slack:<team>:<channel>[:<thread_ts>]`."""
        channel = event["channel"]
        thread_ts = event.get("thread_ts")
        if thread_ts is None and self.slack.always_thread and not _is_direct(event):
            thread_ts = event.get("ts")
        thread = thread_ts if self.slack.thread_is_conversation else None
        return _Target(channel, thread_ts), conversation_key("slack", team, channel, thread)

    def _sender(self, target: _Target, message_id: str) -> Send:
        async def send(text: str) -> list[str]:
            # Raising here tells the engine the reply was not delivered, so it is not stored as history;
            # `PartialDelivery` tells it which parts of a split reply the user did see.
            posted: list[tuple[str, str]] = []
            for part, chunk in enumerate(split_escaped(text, MESSAGE_LIMIT)):
                metadata = {
                    "event_type": REPLY_EVENT_TYPE,
                    "event_payload": {"inbox": message_id, "part": part},
                }
                try:
                    result = await self.client.chat_postMessage(
                        channel=target.channel, text=chunk, thread_ts=target.thread_ts, metadata=metadata
                    )
                except Exception as exc:
                    if posted:
                        raise PartialDelivery(posted, exc) from exc
                    raise
                posted.append((str(result.get("ts") or ""), unescape_text(chunk)))
            return [ts for ts, _ in posted]

        return send

    async def _admin_scope(self, team: str, user: str) -> str | None:
        """What `user` administers: all of Slack for an id in `slack.admin_user_ids`; this workspace
        (`slack:<team>`) for its admins and owners; nothing for everyone else."""
        if user in self.slack.admin_user_ids:
            return "slack"
        workspace = conversation_key("slack", team)
        cached = self._admins.get(f"{team}:{user}")
        if cached is not None and cached[1] > time.monotonic():
            return workspace if cached[0] else None
        try:
            info = (await self.client.users_info(user=user))["user"]
        except Exception as exc:
            logger.warning("users.info failed for %s: %s; treating them as not an admin", user, exc)
            return None
        # An admin of another workspace (a shared channel's guest) administers nothing here.
        is_admin = bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))
        is_admin = is_admin and info.get("team_id", team) == team
        self._admins[f"{team}:{user}"] = (is_admin, time.monotonic() + ADMIN_CACHE_SECONDS)
        return workspace if is_admin else None


def build_app(engine: ChatEngine, config: Config, client: AsyncWebClient | None = None) -> AsyncApp:
    """The bolt app with dialobot's listeners, to run under a handler of your own.

    Without `client`, one is made from the configured bot token and `api_url`. The signing secret is read
    from the environment (required in HTTP mode); HTTP requests without a valid signature get 401.
    """
    slack = config.slack
    client = client or make_client(read_secret(slack, "bot_token_env"), slack.api_url)
    if slack.mode == "http":
        secret = read_secret(slack, "signing_secret_env")
    else:
        secret = secret_from_env("slack.signing_secret_env", slack.signing_secret_env, required=False)
    return SlackAdapter(engine, config, client, secret).app


class SlackService:
    """The `Adapter` for Slack: secrets from the environment, Socket Mode or the HTTP Events API."""

    name = "slack"

    def __init__(self, engine: ChatEngine, config: Config) -> None:
        self.engine = engine
        self.config = config
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        """Answer Slack until `stop` or cancellation; the socket client reconnects by itself meanwhile."""
        slack = self.config.slack
        token = read_secret(slack, "bot_token_env")
        app_token = read_secret(slack, "app_token_env") if slack.mode == "socket" else ""
        secret = read_secret(slack, "signing_secret_env") if slack.mode == "http" else ""
        adapter = SlackAdapter(self.engine, self.config, make_client(token, slack.api_url), secret)
        try:
            await adapter.check_auth()
            await adapter.recover()
            if slack.mode == "socket":
                await adapter.start_socket_mode(app_token)
            else:
                await adapter.start_http(slack.http_host, slack.http_port)
            readiness.ready("slack")
            await self._stopped.wait()
        finally:
            readiness.not_ready("slack", "stopped")
            await adapter.close()

    async def stop(self) -> None:
        self._stopped.set()


def create(engine: ChatEngine, config: Config) -> SlackService:
    return SlackService(engine, config)


async def serve(engine: ChatEngine, config: Config) -> None:
    """Answer Slack until cancelled, over Socket Mode or the HTTP Events API as configured."""
    await SlackService(engine, config).run()
