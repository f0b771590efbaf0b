"""A fake Discord for end-to-end tests: the gateway and the REST endpoints the bot calls, on 127.0.0.1.

The real discord.py client connects to it unchanged; only `Route.BASE` and `DEFAULT_GATEWAY` are pointed here
(see `point_discord_py_at`). The gateway speaks uncompressed JSON text frames: HELLO, IDENTIFY, READY,
GUILD_CREATE, heartbeats, RESUME, and whatever events a test dispatches. REST calls are recorded, so a test
asserts on what the bot sent, and answered with payloads shaped like Discord's. A message posted with a nonce
and `enforce_nonce` that the channel has seen before returns the earlier message instead of a new one, as
Discord does. A test harness (the adapter tests and the crash test, `bot.bench.chaos`), not product code.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import discord.gateway
import discord.http
import yarl
from aiohttp import WSMsgType, web

API_PREFIX = "/api/v10"
HEARTBEAT_INTERVAL_MS = 41_250
TIMESTAMP = "2026-11-27T08:00:00.000000+00:00"
MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
VIEW_CHANNEL, SEND_MESSAGES, READ_MESSAGE_HISTORY, SEND_MESSAGES_IN_THREADS = (
    1 << 10,
    1 << 11,
    1 << 16,
    1 << 38,
)
EVERYONE_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY | SEND_MESSAGES_IN_THREADS

# Opcodes and close codes of the gateway protocol.
DISPATCH, HEARTBEAT, IDENTIFY, RESUME, HELLO, HEARTBEAT_ACK = 0, 1, 2, 6, 10, 11
DISALLOWED_INTENTS = 4014

DISCORD_EPOCH_MS = 1_420_070_400_000
_last_snowflake = 0


def snowflake() -> str:
    """A new id as Discord makes them: the milliseconds since Discord's epoch, shifted left 22 bits, so ids
    grow with time and a bot can tell a message's age from its id; one more than the last in a busy
    millisecond."""
    global _last_snowflake
    now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
    _last_snowflake = max(now, _last_snowflake + 1)
    return str(_last_snowflake)


def json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py parses JSON only when the content type is exactly `application/json` (no charset).
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json")


@dataclass(slots=True)
class Request:
    """One REST call the bot made."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass(slots=True)
class Connection:
    ws: web.WebSocketResponse
    shard: tuple[int, int] = (0, 1)
    seq: int = 0
    session_id: str = field(default_factory=snowflake)

    async def send(self, op: int, data: Any, event: str | None = None) -> None:
        frame: dict[str, Any] = {"op": op, "d": data, "s": None, "t": event}
        if op == DISPATCH:
            self.seq += 1
            frame["s"] = self.seq
        await self.ws.send_str(json.dumps(frame))


class FakeDiscord:
    """Guilds, channels and users kept as plain Discord payloads; tests add them before the bot connects."""

    def __init__(self, token: str = "fake-bot-token", shards: int = 1) -> None:
        self.token = token
        self.shards = shards
        self.application_id = snowflake()
        self.bot_user = self.user("dialobot", bot=True, id=self.application_id)
        self.guilds: dict[str, dict] = {}
        self.channels: dict[str, dict] = {}
        self.requests: list[Request] = []
        self.identified: list[dict] = []  # IDENTIFY payloads
        self.shard_connected = asyncio.Event()  # a shard identified: events can be dispatched to it
        self.commands: dict[str, list[dict]] = {}  # synced slash commands, by "global" or guild id
        self.refuse_intents = False  # close the gateway with 4014, as Discord does without the intent
        self.forbidden_channels: set[str] = set()  # POST .../messages there answers 403 Missing Permissions
        self.unreadable_channels: set[str] = set()  # GET .../messages there answers 403 Missing Access
        self.last_bot_message: dict | None = None  # the payload of the last message the bot posted
        self.rate_limited_sends = 0  # answer this many message POSTs with 429 before accepting them
        self.failing_sends = 0  # answer this many message POSTs with `failing_status` (after any 429s)
        self.failing_status = 500  # 403: refused at once (discord.py retries a 500 for seconds)
        self.typing_delay = 0.0  # each typing indicator POST takes this long to answer
        self.fail_sends_after = 0  # ... but only after this many more message POSTs succeeded
        self.send_delay = 0.0  # each message POST takes up to this many seconds (at random) to answer
        self.created: list[dict] = []  # every message the bot created (a nonce's repeat is not a new one)
        self._by_nonce: dict[tuple[str, str], dict] = {}
        self.history: dict[str, dict[str, dict]] = {}  # channel id -> message id -> message, as posted
        self.in_flight = 0  # REST calls being answered right now
        self.connections: dict[int, Connection] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{path:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for conn in list(self.connections.values()):
            await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # --- the world: payload builders -------------------------------------------------------------------

    def user(self, name: str, bot: bool = False, id: str | None = None) -> dict:
        return {
            "id": id or snowflake(),
            "username": name,
            "discriminator": "0",
            "global_name": name.title(),
            "avatar": None,
            "bot": bot,
        }

    def add_guild(self, name: str = "guild", owner: dict | None = None) -> dict:
        guild_id = snowflake()
        admin_role = {"id": snowflake(), "name": "mods", "permissions": str(MANAGE_GUILD)}
        everyone = {"id": guild_id, "name": "@everyone", "permissions": str(EVERYONE_PERMISSIONS)}
        bot_role = {"id": snowflake(), "name": "dialobot", "permissions": "0", "managed": True}
        bot_role["tags"] = {"bot_id": self.bot_user["id"]}  # the role Discord creates for the invited bot
        for role in (everyone, admin_role, bot_role):
            role.update(color=0, hoist=False, mentionable=False, position=0, flags=0)
            role.setdefault("managed", False)
        guild = {
            "id": guild_id,
            "name": name,
            "owner_id": (owner or self.user("owner"))["id"],
            "roles": [everyone, admin_role, bot_role],
            "channels": [],
            "threads": [],
            "members": [self.member(self.bot_user, roles=[bot_role["id"]])],
            "member_count": 1,
            "features": [],
            "emojis": [],
            "stickers": [],
            "large": False,
            "unavailable": False,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "premium_tier": 0,
            "nsfw_level": 0,
            "preferred_locale": "en-US",
            "system_channel_flags": 0,
            "joined_at": TIMESTAMP,
        }
        self.guilds[guild_id] = guild
        return guild

    def admin_role_id(self, guild: dict) -> str:
        return guild["roles"][1]["id"]

    def bot_role_id(self, guild: dict) -> str:
        return guild["roles"][2]["id"]

    def add_channel(self, guild: dict, name: str = "general") -> dict:
        channel = {
            "id": snowflake(),
            "type": 0,
            "guild_id": guild["id"],
            "name": name,
            "position": len(guild["channels"]),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "rate_limit_per_user": 0,
            "last_message_id": None,
        }
        guild["channels"].append(channel)
        self.channels[channel["id"]] = channel
        return channel

    def add_thread(self, parent: dict, name: str = "thread", owner: dict | None = None) -> dict:
        thread = {
            "id": snowflake(),
            "type": 11,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "name": name,
            "owner_id": (owner or self.bot_user)["id"],
            "message_count": 0,
            "member_count": 1,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": TIMESTAMP,
                "locked": False,
            },
        }
        self.guilds[parent["guild_id"]]["threads"].append(thread)
        self.channels[thread["id"]] = thread
        return thread

    def add_dm(self, recipient: dict) -> dict:
        channel = {"id": snowflake(), "type": 1, "recipients": [recipient], "last_message_id": None}
        self.channels[channel["id"]] = channel
        return channel

    def member(self, user: dict, roles: list[str] | None = None, with_user: bool = True) -> dict:
        member = {
            "roles": roles or [],
            "joined_at": TIMESTAMP,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
        }
        if with_user:
            member["user"] = user
        return member

    def message(self, channel: dict, author: dict, content: str, roles: list[str] | None = None) -> dict:
        """A MESSAGE_CREATE payload from `author` in `channel` (a guild channel, thread or DM)."""
        mentions = [self.bot_user] if re.search(rf"<@!?{self.bot_user['id']}>", content) else []
        data = {
            "id": snowflake(),
            "channel_id": channel["id"],
            "author": author,
            "content": content,
            "timestamp": TIMESTAMP,
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": re.findall(r"<@&(\d+)>", content),
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if "guild_id" in channel:
            data["guild_id"] = channel["guild_id"]
            data["member"] = self.member(author, roles, with_user=False)
        return data

    def interaction(
        self, name: str, channel: dict, user: dict, roles: list[str] | None = None, permissions: int = 0
    ) -> dict:
        """An INTERACTION_CREATE payload: `user` ran the slash command `/name` in `channel`."""
        command_scope = self.commands.get(channel.get("guild_id", ""), self.commands.get("global", []))
        command = next(c for c in command_scope if c["name"] == name)
        data = {
            "id": snowflake(),
            "application_id": self.application_id,
            "type": 2,
            "token": "interaction-token-" + snowflake(),
            "version": 1,
            "data": {"id": command["id"], "name": name, "type": 1},
            "channel_id": channel["id"],
            "channel": channel,
            "locale": "en-US",
            "app_permissions": str(EVERYONE_PERMISSIONS),
            "attachment_size_limit": 10_000_000,
            "entitlements": [],
            "authorizing_integration_owners": {"0": channel.get("guild_id", user["id"])},
        }
        if "guild_id" in channel:
            data["guild_id"] = channel["guild_id"]
            data["data"]["guild_id"] = command.get("guild_id")
            data["context"] = 0
            member = self.member(user, roles)
            member["permissions"] = str(EVERYONE_PERMISSIONS | permissions)
            data["member"] = member
        else:
            data["user"] = user
            data["context"] = 1
        if data["data"].get("guild_id") is None:
            data["data"].pop("guild_id", None)
        return data

    # --- driving the bot -------------------------------------------------------------------------------

    def shard_for(self, guild_id: str | None) -> int:
        return 0 if guild_id is None else (int(guild_id) >> 22) % self.shards

    def post(self, message: dict) -> None:
        """A message appears in its channel (read back by GET /channels/<id>/messages) without an event:
        what a user posts while the bot is not connected."""
        self.history.setdefault(message["channel_id"], {})[message["id"]] = message
        if message["channel_id"] in self.channels:  # GUILD_CREATE sends it: where the newest message is
            self.channels[message["channel_id"]]["last_message_id"] = message["id"]

    async def dispatch(self, event: str, data: dict) -> None:
        """Send a gateway event to the shard that owns its guild (DMs go to shard 0, as on Discord); a
        MESSAGE_CREATE's message is in its channel's history from then on."""
        if event == "MESSAGE_CREATE":
            self.post(data)
        conn = self.connections[self.shard_for(data.get("guild_id"))]
        await conn.send(DISPATCH, data, event)

    async def wait_for(
        self, predicate: Callable[[Request], bool], count: int = 1, within: float = 5.0
    ) -> list[Request]:
        """The first `count` recorded requests matching `predicate`, waiting for them if needed."""

        def matching() -> list[Request]:
            return [r for r in self.requests if predicate(r)]

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(matching()) >= count)
        return matching()[:count]

    def sent(self, channel: dict) -> list[dict]:
        """Bodies of the messages the bot posted in `channel`, oldest first."""
        path = f"/channels/{channel['id']}/messages"
        return [r.body for r in self.requests if r.method == "POST" and r.path == path]

    def requests_to(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    # --- REST ------------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        body = await request.json() if request.content_type == "application/json" else None
        recorded = Request(request.method, path, dict(request.query), body, dict(request.headers))
        self.in_flight += 1
        try:
            if self.send_delay and request.method == "POST" and path.endswith("/messages"):
                await asyncio.sleep(random.uniform(0, self.send_delay))
            if self.typing_delay and request.method == "POST" and path.endswith("/typing"):
                await asyncio.sleep(self.typing_delay)
            # Interaction responses and follow-ups are authorized by the token in their URL instead.
            by_url = path.startswith(("/interactions/", "/webhooks/"))
            if not by_url and request.headers.get("Authorization") != f"Bot {self.token}":
                return json_response({"message": "401: Unauthorized", "code": 0}, status=401)
            return self._answer(recorded)
        except asyncio.CancelledError:
            recorded.body = (
                {**(recorded.body or {}), "cancelled": True}
                if isinstance(recorded.body, dict)
                else recorded.body
            )
            raise
        finally:
            self.in_flight -= 1
            async with self._changed:
                self.requests.append(recorded)
                self._changed.notify_all()

    def _answer(self, req: Request) -> web.Response:
        method, path = req.method, req.path
        if (method, path) == ("GET", "/users/@me"):
            return json_response(self.bot_user)
        if (method, path) == ("GET", "/oauth2/applications/@me"):
            return json_response(self._application())
        if (method, path) == ("GET", "/gateway/bot"):
            limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
            return json_response(
                {"url": self.gateway_url, "shards": self.shards, "session_start_limit": limit}
            )
        if method == "PUT" and (match := re.fullmatch(r"/applications/\d+(?:/guilds/(\d+))?/commands", path)):
            return json_response(self._sync_commands(match.group(1), req.body))
        if method == "POST" and re.fullmatch(r"/channels/\d+/typing", path):
            return web.Response(status=204)
        if method == "POST" and (match := re.fullmatch(r"/channels/(\d+)/messages", path)):
            if match.group(1) in self.forbidden_channels:
                return json_response({"message": "Missing Permissions", "code": 50013}, status=403)
            if self.rate_limited_sends:
                self.rate_limited_sends -= 1
                return self._too_many_requests()
            if self.failing_sends:
                if self.fail_sends_after:
                    self.fail_sends_after -= 1
                else:
                    self.failing_sends -= 1
                    if self.failing_status == 403:
                        return json_response({"message": "Missing Permissions", "code": 50013}, status=403)
                    return json_response({"message": "500: Internal Server Error", "code": 0}, status=500)
            nonce = req.body.get("nonce") if req.body.get("enforce_nonce") else None
            if nonce is not None and (match.group(1), str(nonce)) in self._by_nonce:
                return json_response(self._by_nonce[match.group(1), str(nonce)])
            created = self._bot_message(match.group(1), req.body)
            self.created.append(created)
            if nonce is not None:
                self._by_nonce[match.group(1), str(nonce)] = created
            return json_response(created)
        if (method, path) == ("POST", "/users/@me/channels"):  # open (or find) the DM with a user
            recipient = str(req.body.get("recipient_id"))
            for channel in self.channels.values():
                if channel.get("type") == 1 and channel["recipients"][0]["id"] == recipient:
                    return json_response(channel)
            return json_response(self.add_dm(self.user("someone", id=recipient)))
        if method == "GET" and (match := re.fullmatch(r"/channels/(\d+)/messages", path)):
            if match.group(1) in self.unreadable_channels:  # no Read Message History there
                return json_response({"message": "Missing Access", "code": 50001}, status=403)
            return json_response(self._history(match.group(1), req.query))
        if (
            method == "GET"
            and (match := re.fullmatch(r"/channels/(\d+)", path))
            and match.group(1) in self.channels
        ):
            return json_response(self.channels[match.group(1)])
        if re.fullmatch(r"/interactions/\d+/[^/]+/callback", path):
            iid = path.split("/")[2]
            loading = req.body.get("type") == 5
            interaction = {"id": iid, "type": 2, "response_message_loading": loading}
            return json_response({"interaction": interaction, "resource": {"type": req.body.get("type")}})
        if re.fullmatch(r"/webhooks/\d+/[^/]+", path) and method == "POST":
            return json_response(self._bot_message(None, req.body))
        return json_response({"message": "404: Not Found", "code": 0}, status=404)

    def _history(self, channel_id: str, query: dict[str, str]) -> list[dict]:
        """GET /channels/<id>/messages as Discord answers it: up to `limit` (default 50, at most 100)
        messages after `after`, before `before`, or the latest; newest first in every case."""
        limit = max(1, min(int(query.get("limit", 50)), 100))
        ids = sorted(self.history.get(channel_id, {}), key=int)
        if "after" in query:
            chosen = [i for i in ids if int(i) > int(query["after"])][:limit]
        else:
            before = int(query.get("before", 1 << 64))
            chosen = [i for i in ids if int(i) < before][-limit:]
        return [self.history[channel_id][i] for i in reversed(chosen)]

    def _too_many_requests(self) -> web.Response:
        body = {"message": "You are being rate limited.", "retry_after": 0.05, "global": False}
        response = json_response(body, status=429)
        # discord.py takes a 429 without `Via` for a Cloudflare ban rather than a rate limit.
        response.headers.update({"Via": "1.1 google", "X-RateLimit-Remaining": "0", "Retry-After": "1"})
        response.headers.update({"X-RateLimit-Limit": "5", "X-RateLimit-Reset-After": "0.05"})
        return response

    def _application(self) -> dict:
        return {
            "id": self.application_id,
            "name": "dialobot",
            "icon": None,
            "description": "",
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.user("developer"),
            "summary": "",
            "verify_key": "0" * 64,
            "flags": 0,
        }

    def _sync_commands(self, guild_id: str | None, payload: list[dict]) -> list[dict]:
        commands = [
            {
                **command,
                "id": snowflake(),
                "application_id": self.application_id,
                "version": snowflake(),
                "guild_id": guild_id,
            }
            for command in payload
        ]
        self.commands[guild_id or "global"] = commands
        return commands

    def _bot_message(self, channel_id: str | None, body: dict) -> dict:
        self.last_bot_message = {
            "id": snowflake(),
            "channel_id": channel_id or snowflake(),
            "author": self.bot_user,
            "content": body.get("content", ""),
            "timestamp": TIMESTAMP,
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 19 if body.get("message_reference") else 0,
            "flags": 0,
        }
        if body.get("message_reference"):
            self.last_bot_message["message_reference"] = body["message_reference"]
        if body.get("nonce") is not None:
            self.last_bot_message["nonce"] = body["nonce"]
        if channel_id is not None:
            self.post(self.last_bot_message)
        return self.last_bot_message

    # --- gateway ---------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = Connection(ws)
        await conn.send(HELLO, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS})
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                break
            payload = json.loads(frame.data)
            if payload["op"] == HEARTBEAT:
                await conn.send(HEARTBEAT_ACK, None)
            elif payload["op"] == IDENTIFY:
                await self._identify(conn, payload["d"])
            elif payload["op"] == RESUME:
                old = next(c for c in self.connections.values() if c.session_id == payload["d"]["session_id"])
                conn.shard, conn.session_id, conn.seq = old.shard, old.session_id, old.seq
                self.connections[conn.shard[0]] = conn
                await conn.send(DISPATCH, {}, "RESUMED")
        return ws

    async def _identify(self, conn: Connection, identify: dict) -> None:
        self.identified.append(identify)
        if identify["token"] != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if self.refuse_intents:
            await conn.ws.close(code=DISALLOWED_INTENTS, message=b"Disallowed intent(s).")
            return
        conn.shard = tuple(identify.get("shard", (0, 1)))
        self.connections[conn.shard[0]] = conn
        self.shard_connected.set()
        mine = [g for g in self.guilds.values() if self.shard_for(g["id"]) == conn.shard[0]]
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": g["id"], "unavailable": True} for g in mine],
            "session_id": conn.session_id,
            "resume_gateway_url": self.gateway_url,
            "shard": list(conn.shard),
            "application": {"id": self.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await conn.send(DISPATCH, ready, "READY")
        for guild in mine:
            await conn.send(DISPATCH, guild, "GUILD_CREATE")


def point_discord_py_at(fake: FakeDiscord, monkeypatch: Any) -> None:
    """Aim discord.py's REST routes (webhooks and interactions included) and gateway at `fake`."""
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
