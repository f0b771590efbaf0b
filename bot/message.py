"""The one normalized message type every adapter hands to the core, and what the core hands back.

Adapters translate platform events into an `IncomingMessage`; the `channel_key` decides which conversation a
message belongs to (NoneBot's `get_session_id()`): `discord:<guild>:<channel>[:<thread>]`,
`slack:<team>:<channel>[:<thread_ts>]`, `console:<name>`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A message addressed to the bot, with any mention of the bot already removed from `text`."""

    platform: str
    channel_key: str
    author_id: str
    text: str
    is_admin: bool = False
    is_direct: bool = False
    message_id: str | None = None
    author_name: str | None = None


class ReplyKind(StrEnum):
    CHAT = "chat"  # the model's answer; stored as history once delivered
    COMMAND = "command"  # the answer to a command such as `help`
    NOTICE = "notice"  # a hint, refusal or apology from the bot itself; never stored
    IGNORED = "ignored"  # not answered at all: a denied user or a channel the bot does not answer in


@dataclass(frozen=True, slots=True)
class Reply:
    """What the engine answered and whether the adapter managed to deliver it."""

    text: str
    kind: ReplyKind
    delivered: bool


Send = Callable[[str], Awaitable[None]]
"""Delivers one reply to the place the message came from; raises if the platform refused it.

Adapters split long text to their platform's limits inside `send`: the engine hands over the whole reply.
"""
