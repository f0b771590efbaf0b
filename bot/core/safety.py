"""What the engine asks before a model reply is sent, or a message is answered: is this text acceptable here?

The core only knows `ReplyFilter.check(text, channel_key) -> Verdict`; the classifiers, the blocklist and
their settings live in `bot.safety`, wired in by the composition root. A filter that raises is the engine's
business: a reply that could not be checked is not sent (bot/core/engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Verdict:
    """A filter's answer. `reason` names what flagged the text (`classifier`, `blocklist`): it labels the
    metric; `detail` says how (a score and threshold, a blocklist entry) and never quotes the text."""

    flagged: bool
    reason: str = ""
    detail: str = ""


PASSED = Verdict(flagged=False)


class ReplyFilter(Protocol):
    async def check(self, text: str, channel_key: str) -> Verdict:
        """Whether `text` may be shown (a reply) or answered (a message) in `channel_key`."""

    def describe(self, channel_key: str) -> str:
        """A phrase for `status`: whether the filter is on in `channel_key`, and how strict it is."""

    async def close(self) -> None: ...


class NoFilter:
    """Lets everything through: `safety.classifier = "none"` with no blocklist."""

    async def check(self, text: str, channel_key: str) -> Verdict:
        return PASSED

    def describe(self, channel_key: str) -> str:
        return "safety filter off"

    async def close(self) -> None:
        pass
