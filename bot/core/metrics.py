"""Every Prometheus metric dialobot exports, defined once here so each part of the bot observes the same ones.

They live in their own registry (not prometheus-client's global one), so `/metrics` shows dialobot's figures
and nothing a library happened to register. Names follow Prometheus conventions: `_total` for counters,
base units (seconds) for durations.

Who observes what: the engine counts messages, replies, errors, generation latency and what the safety
filter stopped; the batching scheduler observes `BATCH_SIZE` and `QUEUE_DEPTH`; the health server sets
`HISTORY_ROWS` when scraped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES_RECEIVED = Counter(
    "dialobot_messages_received",
    "Messages addressed to the bot, by platform.",
    ["platform"],
    registry=REGISTRY,
)
REPLIES_SENT = Counter(
    "dialobot_replies_sent",
    "Replies delivered, by platform and kind (chat, command, notice).",
    ["platform", "kind"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "dialobot_errors",
    "Failures by kind: generation, generation_timeout, send (platform refused), storage, command, safety "
    "(the safety filter raised).",
    ["kind"],
    registry=REGISTRY,
)
GENERATION_SECONDS = Histogram(
    "dialobot_generation_seconds",
    "Time to generate one reply, waiting for a batch included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
GENERATIONS_PENDING = Gauge(
    "dialobot_generations_pending",
    "Replies being generated or waiting to be, right now.",
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "dialobot_queue_depth",
    "Generation requests waiting in the batching scheduler's queue.",
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "dialobot_batch_size",
    "Replies generated together in one model call.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
    registry=REGISTRY,
)
HISTORY_ROWS = Gauge(
    "dialobot_history_rows",
    "Stored conversation turns, all channels (read from the database when scraped).",
    registry=REGISTRY,
)
SAFETY_FILTERED = Counter(
    "dialobot_safety_filtered",
    "Texts the safety filter stopped, by what (reply: a model reply; input: a user's message) and why "
    "(classifier, blocklist, error: the check itself failed).",
    ["what", "reason"],
    registry=REGISTRY,
)


@contextmanager
def observe_generation() -> Iterator[None]:
    """Around one generator call: counts it as pending, times it, and counts an exception as an error."""
    GENERATIONS_PENDING.inc()
    started = time.perf_counter()
    try:
        yield
    except Exception:
        ERRORS.labels(kind="generation").inc()
        raise
    else:
        GENERATION_SECONDS.observe(time.perf_counter() - started)
    finally:
        GENERATIONS_PENDING.dec()


def exposition() -> bytes:
    """The registry in Prometheus' text format, as `/metrics` serves it."""
    return generate_latest(REGISTRY)
