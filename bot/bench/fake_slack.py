"""A fake Slack on 127.0.0.1 for the Slack adapter's end-to-end tests and the crash test (`bot.bench.chaos`);
a test harness, not product code.

It speaks Slack's wire formats so that the real slack-bolt app and slack_sdk clients run against it unchanged:
the Web API methods the adapter calls (`POST /api/<method>`, Bearer tokens, `{"ok": ...}` answers, HTTP 429
with `Retry-After`), a Socket Mode WebSocket (`hello`, event envelopes, acks), and Slack's request signing
for delivering events to an app's own HTTP endpoint. Every Web API call and every ack is recorded, in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

TEAM_ID = "T0TEAM"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
APP_ID = "A0APP"
BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
SIGNING_SECRET = "fake-signing-secret"
WAIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One Web API request as the fake received it (arguments from the query, form or JSON body merged)."""

    method: str
    args: dict[str, Any]
    token: str | None
    status: int  # the HTTP status the fake answered: 200, or 429 when rate limiting
    ok: bool  # the `ok` field of the answer


@dataclass(slots=True)
class _Canned:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)


class FakeSlack:
    """Start with `await fake.start()`; `fake.api_url` is the Web API base URL to point clients at."""

    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self.acks: list[dict] = []
        self.log: list[str] = []  # "call:<method>" and "ack:<envelope_id>" in the order they happened
        self.users: dict[str, dict] = {}  # users.info answers: user id -> flags such as {"is_admin": True}
        self.slow: dict[str, float] = {}  # Web API method -> seconds to wait before answering it
        self._canned: dict[str, list[_Canned]] = {}
        self.messages: list[dict[str, Any]] = []  # what the bot posted, as conversations.history lists it
        self.post_delay = 0.0  # each chat.postMessage takes up to this many seconds (at random) to answer
        self.in_flight = 0  # Web API calls being answered right now
        self._sockets: list[web.WebSocketResponse] = []
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle ----

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        for ws in self._sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # ---- Web API ----

    def fail_next(self, method: str, error: str, times: int = 1) -> None:
        """Answer the next `times` calls to `method` with `{"ok": false, "error": error}`."""
        self._canned.setdefault(method, []).extend([_Canned(200, {"ok": False, "error": error})] * times)

    def rate_limit_next(self, method: str, times: int = 1, retry_after: int = 0) -> None:
        """Answer the next `times` calls to `method` with HTTP 429 and `Retry-After`, as Slack does."""
        canned = _Canned(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})
        self._canned.setdefault(method, []).extend([canned] * times)

    def server_error_next(self, method: str, times: int = 1, status: int = 500) -> None:
        """Answer the next `times` calls to `method` with an HTTP 5xx, as Slack does when in trouble."""
        canned = _Canned(status, {"ok": False, "error": "internal_error"})
        self._canned.setdefault(method, []).extend([canned] * times)

    def calls_to(self, method: str) -> list[ApiCall]:
        return [call for call in self.calls if call.method == method]

    @property
    def posted(self) -> list[dict[str, Any]]:
        """The arguments of every `chat.postMessage` that succeeded (its message metadata left out)."""
        return [
            {k: v for k, v in call.args.items() if k != "metadata"}
            for call in self.calls_to("chat.postMessage")
            if call.ok
        ]

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(await request.post())
        self.in_flight += 1
        try:
            if self.post_delay and method == "chat.postMessage":
                await asyncio.sleep(random.uniform(0, self.post_delay))
        finally:
            self.in_flight -= 1
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.pop("token", None)
        if self.slow.get(method):
            await asyncio.sleep(self.slow[method])  # a slow Slack, not a test waiting
        canned = self._canned.get(method)
        answer = canned.pop(0) if canned else _Canned(200, self._answer(method, args, token))
        self.calls.append(ApiCall(method, args, token, answer.status, answer.body["ok"]))
        await self._record(f"call:{method}")
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> dict:
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != expected:
            return {"ok": False, "error": "invalid_auth"}
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://fake.slack.test/",
                "team": "Fake Team",
                "user": "dialobot",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
                "is_enterprise_install": False,
            }
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}
        if method == "chat.postMessage":
            if not args.get("channel") or not args.get("text"):
                return {"ok": False, "error": "no_text" if args.get("channel") else "channel_not_found"}
            ts = f"{int(time.time())}.{next(self._ids):06d}"
            message = {
                "type": "message",
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "text": args["text"],
                "ts": ts,
            }
            metadata = args.get("metadata")
            if isinstance(metadata, str):
                metadata = json.loads(metadata)
            if metadata:
                message["metadata"] = metadata
            if args.get("thread_ts"):
                message["thread_ts"] = args["thread_ts"]
            self.messages.append({"channel": args["channel"], **message})
            return {"ok": True, "channel": args["channel"], "ts": ts, "message": message}
        if method in ("conversations.history", "conversations.replies"):
            return {"ok": True, "messages": self._history(method, args), "has_more": False}
        if method == "users.info":
            user = args.get("user", "")
            if user not in self.users:
                return {"ok": False, "error": "user_not_found"}
            flags = {"is_admin": False, "is_owner": False, "is_primary_owner": False} | self.users[user]
            return {"ok": True, "user": {"id": user, "team_id": TEAM_ID, "is_bot": False, **flags}}
        return {"ok": False, "error": "unknown_method"}

    def _history(self, method: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """The bot's messages in a channel (history: top level) or a thread (replies), newest first."""
        oldest = float(args.get("oldest") or 0)
        found = []
        for message in self.messages:
            if message["channel"] != args.get("channel") or float(message["ts"]) <= oldest:
                continue
            thread = message.get("thread_ts")
            if method == "conversations.replies" and thread != args.get("ts"):
                continue
            if method == "conversations.history" and thread not in (None, message["ts"]):
                continue
            listed = {k: v for k, v in message.items() if k != "channel"}
            if not _truthy(args.get("include_all_metadata")):
                listed.pop("metadata", None)
            found.append(listed)
        return list(reversed(found))

    # ---- Socket Mode ----

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": APP_ID}})
        self._sockets.append(ws)
        await self._record("socket:connected")
        async for frame in ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(frame.data)
                if "envelope_id" in data:
                    self.acks.append(data)
                    await self._record(f"ack:{data['envelope_id']}")
        self._sockets.remove(ws)
        return ws

    async def wait_connected(self) -> None:
        """Wait until an app holds an open Socket Mode connection (and has been sent `hello`)."""
        async with self._changed:
            connected = self._changed.wait_for(lambda: any(not ws.closed for ws in self._sockets))
            await asyncio.wait_for(connected, WAIT_SECONDS)

    async def send_event(
        self, payload: dict, retry_attempt: int = 0, retry_reason: str = "", wait_for_ack: bool = True
    ) -> str:
        """Push an `events_api` envelope to the connected app; by default wait for its ack. Returns its id."""
        envelope_id = f"env-{next(self._ids)}"
        envelope = {
            "envelope_id": envelope_id,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
            "payload": payload,
        }
        await next(ws for ws in reversed(self._sockets) if not ws.closed).send_json(envelope)
        if wait_for_ack:
            await self.wait_for(f"ack:{envelope_id}")
        return envelope_id

    # ---- HTTP Events API ----

    async def deliver(
        self,
        url: str,
        payload: dict,
        *,
        retry_num: int | None = None,
        secret: str = SIGNING_SECRET,
        timestamp: int | None = None,
    ) -> tuple[int, str]:
        """POST `payload` to an app's endpoint, signed as Slack signs (`v0`, HMAC-SHA256); status and body."""
        body = json.dumps(payload)
        timestamp = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": sign(secret, timestamp, body),
        }
        if retry_num is not None:
            headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    # ---- waiting ----

    async def _record(self, entry: str) -> None:
        async with self._changed:
            self.log.append(entry)
            self._changed.notify_all()

    async def wait_for(self, entry: str, count: int = 1) -> None:
        """Wait until `entry` (such as `call:chat.postMessage`) has been logged `count` times."""
        async with self._changed:
            logged = self._changed.wait_for(lambda: self.log.count(entry) >= count)
            await asyncio.wait_for(logged, WAIT_SECONDS)


def sign(secret: str, timestamp: int, body: str) -> str:
    """Slack's request signature: `v0=` + HMAC-SHA256 of `v0:<timestamp>:<body>` with the signing secret."""
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


def event_callback(event: dict, event_id: str) -> dict:
    """The Events API wrapper Slack puts around an event, as delivered to this fake's app."""
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": {"event_ts": event.get("ts", "0"), **event},
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
        "is_ext_shared_channel": False,
    }


def mention(text: str, user: str = "U1USER", channel: str = "C1CHAN", ts: str = "1700000000.000100", **extra):
    """An `app_mention` event: `text` follows the bot's `<@U0BOT>` mention."""
    return {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER_ID}> {text}",
        "ts": ts,
        "channel": channel,
        **extra,
    }


def direct_message(
    text: str, user: str = "U1USER", channel: str = "D1DM", ts: str = "1700000000.000200", **extra
):
    """A `message` event in a DM (`channel_type: im`)."""
    return {
        "type": "message",
        "channel_type": "im",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        **extra,
    }


def _truthy(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")
