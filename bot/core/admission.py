"""Back-pressure and flood control, decided before a message costs a model call.

A public server can send more messages than a CPU can answer. Without a bound, every waiting message is a
coroutine, a prompt and a place in a channel's lock queue, and memory grows with the flood. `Admission`
counts the chat messages waiting for or in generation (in the engine, so it works with any generator) and
refuses at once beyond `limits.max_pending` (all channels) or `limits.max_pending_per_channel`. The optional
per-user cooldown and per-channel rate use the `limits` library's moving windows, which also say when the
next message will be accepted, so a refusal can tell the user how long to wait.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from bot.config import LimitsConfig
from bot.core.message import IncomingMessage

logger = logging.getLogger(__name__)

BUSY = "I'm answering a lot of messages right now. Please try again in a minute."
COOLDOWN = "Slow down a little: you can send your next message in {seconds} s."
CHANNEL_RATE = "This conversation is going fast: I can take the next message in {seconds} s."
TOO_LONG_NOTICE = "(Your message was long: I read only its first {chars} characters.)"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is not answered now, as the one line the user gets."""

    reason: str  # "busy", "cooldown" or "rate"
    text: str


class Admission:
    """Decides whether a chat message is answered now; counts the ones that are until they finish."""

    def __init__(self, settings: LimitsConfig) -> None:
        self.settings = settings
        self.pending = 0
        self._pending_by_channel: dict[str, int] = {}
        self._cooldown: RateLimitItem | None = None
        self._channel_rate: RateLimitItem | None = None
        if settings.user_cooldown_seconds:
            self._cooldown = RateLimitItemPerSecond(1, settings.user_cooldown_seconds)
        if settings.channel_rate:
            self._channel_rate = parse(settings.channel_rate)
        # The in-memory moving window keeps a timer thread alive while it holds entries: only when needed.
        self._limiter = (
            MovingWindowRateLimiter(MemoryStorage()) if self._cooldown or self._channel_rate else None
        )

    def check(self, msg: IncomingMessage) -> Refusal | None:
        """A refusal if `msg` must not be answered now; otherwise None (and the message counts as sent)."""
        if self.pending >= self.settings.max_pending or (
            self._pending_by_channel.get(msg.channel_key, 0) >= self.settings.max_pending_per_channel
        ):
            return Refusal("busy", BUSY)
        if self._limiter is None:
            return None
        user = (msg.platform, msg.author_id)
        if self._cooldown and not self._limiter.test(self._cooldown, "user", *user):
            return Refusal("cooldown", COOLDOWN.format(seconds=self._wait(self._cooldown, "user", *user)))
        channel = ("channel", msg.channel_key)
        if self._channel_rate and not self._limiter.hit(self._channel_rate, *channel):
            seconds = self._wait(self._channel_rate, *channel)
            return Refusal("rate", CHANNEL_RATE.format(seconds=seconds))
        if self._cooldown:
            self._limiter.hit(self._cooldown, "user", *user)
        return None

    def _wait(self, item: RateLimitItem, *identifiers: str) -> int:
        assert self._limiter is not None  # only asked for when a limit is configured
        reset_at = self._limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    @contextmanager
    def slot(self, channel_key: str) -> Iterator[None]:
        """Count one message of `channel_key` as pending while the block runs."""
        self.pending += 1
        self._pending_by_channel[channel_key] = self._pending_by_channel.get(channel_key, 0) + 1
        try:
            yield
        finally:
            self.pending -= 1
            left = self._pending_by_channel[channel_key] - 1
            if left:
                self._pending_by_channel[channel_key] = left
            else:
                del self._pending_by_channel[channel_key]


def cut_to_limit(text: str, max_chars: int) -> tuple[str, bool]:
    """`text` cut to `max_chars` characters (at a space when one is near the end), and whether it was cut."""
    if len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    space = cut.rfind(" ", max(0, max_chars - 100))
    return (cut[:space] if space > 0 else cut).rstrip(), True
