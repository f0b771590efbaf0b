"""The one normalized message type every adapter hands to the core, and what the core hands back.

Adapters translate platform events into an `IncomingMessage`; the `channel_key` decides which conversation a
message belongs to (NoneBot's `get_session_id()`): `discord:<guild>:<channel>[:<thread>]`,
`slack:<team>:<channel>[:<thread_ts>]`, `console:<name>`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A message addressed to the bot, with any mention of the bot already removed from `text`."""

    platform: str
    channel_key: str
    author_id: str
    text: str
    admin_scope: str | None = None
    """What the author administers, as a conversation-key prefix: `discord:<guild>` for that server's
    managers, `slack:<team>` for that workspace's admins, `<platform>` for the configured operators, None for
    everyone else. Admin commands need a scope that covers the message's own conversation (`in_scope`)."""
    is_direct: bool = False
    message_id: str | None = None
    author_name: str | None = None
    mentioned_users: tuple[str, ...] = ()
    """Ids of the users the message mentions, the bot excluded, in order (`purge @someone`)."""
    route: dict[str, str] = field(default_factory=dict, compare=False)
    """Where the adapter answers it (channel, thread, message to reply to), kept in the inbox so that the
    adapter's `sender_for` can answer it after a restart. Opaque to the core."""

    def to_json(self) -> str:
        """The message as stored in the inbox."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IncomingMessage:
        data = json.loads(text)
        data["mentioned_users"] = tuple(data.get("mentioned_users", ()))
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def administers_here(self) -> bool:
        """Whether the author's admin scope covers this message's conversation."""
        return self.admin_scope is not None and in_scope(self.channel_key, self.admin_scope)


def in_scope(key: str, prefix: str) -> bool:
    """Whether conversation key `key` is `prefix` or lies under it, whole `:`-separated parts only:
    `discord:1` covers `discord:1:2` but not `discord:12:3`."""
    prefix = prefix.rstrip(":")
    return bool(prefix) and (key == prefix or key.startswith(prefix + ":"))


def conversation_key(platform: str, *parts: object) -> str:
    """The key of one conversation: the platform, then its place from widest to narrowest, `:`-joined.

    `conversation_key("discord", guild, channel, thread)`, `conversation_key("slack", team, channel)`,
    `conversation_key("console", name)`. Empty parts (no thread) are left out, so a channel and its threads
    share a prefix that access lists can name.
    """
    if not parts or any(":" in str(p) for p in parts if p not in (None, "")):
        raise ValueError(f"a {platform} conversation key needs parts without ':', got {parts!r}")
    return ":".join([platform, *(str(p) for p in parts if p not in (None, ""))])


class ReplyKind(StrEnum):
    CHAT = "chat"  # the model's answer; stored as history once delivered
    COMMAND = "command"  # the answer to a command such as `help`
    NOTICE = "notice"  # a hint, refusal or apology from the bot itself; never stored
    IGNORED = "ignored"  # not answered at all: a denied user or a channel the bot does not answer in


@dataclass(frozen=True, slots=True)
class Reply:
    """What the engine answered and whether the adapter managed to deliver it.

    `text` is what the user saw: for a split reply whose later parts failed, the parts that were posted.
    """

    text: str
    kind: ReplyKind
    delivered: bool
    reply_ids: tuple[str, ...] = ()
    """The platform's ids of the messages posted, when the adapter reports them."""
    complete: bool = True
    """False when only some parts of a split reply were posted."""


class PartialDelivery(Exception):
    """Raised by a `send` that posted some parts of a split reply and then failed: what the user saw."""

    def __init__(self, parts: Sequence[tuple[str, str]], cause: BaseException) -> None:
        super().__init__(f"{len(parts)} part(s) posted, then: {cause}")
        self.parts = list(parts)
        """(platform message id, text) of each part posted, in order."""
        self.cause = cause


Send = Callable[[str], Awaitable[Sequence[str] | None]]
"""Delivers one reply to the place the message came from; raises if the platform refused it.

Adapters split long text to their platform's limits inside `send`: the engine hands over the whole reply.
It returns the ids of the messages posted (or None when the platform has none), and raises
`PartialDelivery` when only some parts of a split reply were posted.
"""

SenderFor = Callable[[IncomingMessage], Send | None]
"""An adapter's way to answer a message from the inbox after a restart (None: it cannot be answered)."""

FindPosted = Callable[[IncomingMessage], Awaitable[Sequence[tuple[str, str]]]]
"""An adapter's way to find the parts of a reply to a message that were posted before a restart came
between posting them and recording them: (platform message id, text) of each, in order; [] if none."""
