"""Who the bot answers and where: channel allow- and deny-lists and a user deny-list from the config.

Entries are conversation keys or prefixes of them at a `:` boundary, so `discord:<guild>` covers every
channel, thread and so on of that server and `slack:<team>:<channel>` covers the channel's threads. Users are
`<platform>:<user id>`: ids are only unique within a platform. A message the lists exclude is ignored
without a reply: a bot that answers "you are blocked" to a flood still answers the flood.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bot.config import AccessConfig
from bot.core.message import IncomingMessage, in_scope

logger = logging.getLogger(__name__)


def _covers(entries: Iterable[str], key: str) -> bool:
    return any(in_scope(key, entry) for entry in entries)


class AccessPolicy:
    """Answers one question: may the bot answer this message at all?"""

    def __init__(self, settings: AccessConfig) -> None:
        self._allow = tuple(settings.allow_channels)
        self._deny = tuple(settings.deny_channels)
        self._deny_users = frozenset(settings.deny_users)

    def allows(self, msg: IncomingMessage) -> bool:
        if f"{msg.platform}:{msg.author_id}" in self._deny_users:
            logger.debug("ignoring denied user %s:%s", msg.platform, msg.author_id)
            return False
        key = msg.channel_key
        if _covers(self._deny, key) or (self._allow and not _covers(self._allow, key)):
            logger.debug("ignoring a message in %s: not an allowed channel", msg.channel_key)
            return False
        return True
