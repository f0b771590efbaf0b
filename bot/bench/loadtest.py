"""Load, fault and bad-input runs through the real engine and a real database, with figures to check.

`python -m bot.bench.loadtest` sends many channels' messages at once through `ChatEngine` on a fresh SQLite
file
(or `--db-url`), then checks every message against what came back and what was stored: answered exactly
once, in order within its channel, history rows exactly the exchanges that were delivered, no channel's text
in another channel's prompt, no "database is locked". `--fuzz N` then sends N hostile messages (control and
zero-width characters, right-to-left text, special-token text, enormous and empty messages, command
look-alikes) and counts crashes. The generator is a fast echo unless `--model` names a real one (`demo`).
The tests run the same `run_load` and `run_fuzz` (tests/bot/test_load.py, tests/bot/test_fuzz.py);
docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bot.config import Config, parse_config
from bot.core.engine import ChatEngine
from bot.core.generator import Generator, ModelInfo, ProjectionCounts
from bot.core.message import IncomingMessage, ReplyKind
from storage import Role, open_store

logger = logging.getLogger(__name__)


class EchoGenerator:
    """A fast stand-in for the model: answers `echo: <message>` after `delay` seconds."""

    def __init__(self, delay: float = 0.001) -> None:
        self.info = ModelInfo(
            name="echo",
            source="loadtest",
            quantization="none",
            backend="echo",
            parameters=0,
            context=1024,
            projections=ProjectionCounts(int8=0, total=0),
        )
        self.delay = delay

    async def generate(self, turns: Sequence[str]) -> str:
        await asyncio.sleep(self.delay)
        return f"echo: {turns[-1]}"

    async def close(self) -> None:
        pass


class PromptRecorder:
    """Wraps a generator and keeps every prompt it was given, to check that channels never mix."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.info = inner.info
        self.prompts: list[list[str]] = []

    async def generate(self, turns: Sequence[str]) -> str:
        self.prompts.append(list(turns))
        return await self.inner.generate(turns)

    async def close(self) -> None:
        await self.inner.close()


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {record.exc_info[1]!r}"
        self.messages.append(text)


@dataclass
class LoadReport:
    channels: int
    per_channel: int
    sent: int = 0
    answered: int = 0
    """Messages that got exactly one delivered reply from the model."""
    refused_busy: int = 0
    """Messages that got the one-line "busy"/"wait" notice instead (back-pressure)."""
    lost: int = 0
    duplicated: int = 0
    out_of_order_channels: int = 0
    history_mismatches: int = 0
    """Channels whose stored rows are not exactly their delivered exchanges, in order."""
    leaked_prompts: int = 0
    """Prompts holding another channel's text."""
    database_locked: int = 0
    errors_logged: int = 0
    seconds: float = 0.0
    messages_per_second: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.out_of_order_channels
            or self.history_mismatches
            or self.leaked_prompts
            or self.database_locked
            or self.errors_logged
        )


def load_config(channels: int, per_channel: int, **sections: dict) -> Config:
    """A config whose back-pressure bounds let the whole load in (the point is to check every answer)."""
    data = {"limits": {"max_pending": channels * per_channel, "max_pending_per_channel": per_channel}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data)


def _token(channel: int) -> str:
    return f"zq{channel:04d}x"  # one word the model's tokenizer keeps whole-ish; unique per channel


async def run_load(
    db_url: str, generator: Generator, config: Config, channels: int = 50, per_channel: int = 20
) -> LoadReport:
    """Send `channels` x `per_channel` messages at once through one engine; check every one of them."""
    report = LoadReport(channels=channels, per_channel=per_channel)
    recorder = PromptRecorder(generator)
    errors = _ErrorLog()
    logging.getLogger().addHandler(errors)
    store = await open_store(db_url)
    try:
        engine = ChatEngine(store, recorder, config)
        replies: dict[tuple[int, int], list[str]] = defaultdict(list)
        kinds: dict[tuple[int, int], ReplyKind] = {}
        order: dict[int, list[int]] = defaultdict(list)

        async def one(c: int, i: int) -> None:
            async def send(text: str) -> None:
                order[c].append(i)
                replies[(c, i)].append(text)

            msg = IncomingMessage(
                platform="load",
                channel_key=f"load:{c}",
                author_id=f"user{(c * 7 + i) % 13}",
                text=f"{_token(c)} message {i} of channel {c}",
            )
            kinds[(c, i)] = (await engine.handle(msg, send)).kind

        started = time.perf_counter()
        await asyncio.gather(*(one(c, i) for i in range(per_channel) for c in range(channels)))
        report.seconds = time.perf_counter() - started
        report.sent = channels * per_channel
        for c in range(channels):
            for i in range(per_channel):
                got = replies.get((c, i), [])
                if not got:
                    report.lost += 1
                elif len(got) > 1:
                    report.duplicated += 1
                elif kinds[(c, i)] is ReplyKind.CHAT:
                    report.answered += 1
                else:
                    report.refused_busy += 1
            # Model answers in arrival order; "busy" notices go out at once, ahead of them, by design.
            answers = [i for i in order[c] if kinds[(c, i)] is ReplyKind.CHAT]
            if answers != sorted(answers):
                report.out_of_order_channels += 1
            expected = []
            for i in range(per_channel):
                got = replies.get((c, i), [])
                if len(got) == 1 and kinds[(c, i)] is ReplyKind.CHAT:
                    expected += [(Role.USER, f"{_token(c)} message {i} of channel {c}"), (Role.BOT, got[0])]
            stored = [(t.role, t.text) for t in await store.recent_turns(f"load:{c}", 10 * per_channel + 10)]
            if stored != expected:
                report.history_mismatches += 1
        for prompt in recorder.prompts:
            own = prompt[-1].split()[0]
            if any(word.startswith("zq") and word != own for turn in prompt for word in turn.split()):
                report.leaked_prompts += 1
    finally:
        await store.close()
        logging.getLogger().removeHandler(errors)
    report.database_locked = sum("database is locked" in m for m in errors.messages)
    report.errors_logged = len(errors.messages)
    report.error_samples = errors.messages[:5]
    report.messages_per_second = report.sent / report.seconds if report.seconds else 0.0
    return report


# ---- bad input ----

SPECIAL = ["<|endoftext|>", "<|endoftext|><|endoftext|>", "<s></s>", "[INST]", "<pad>", "<unk>", "\x00"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
RTL = ["\u202e", "\u202b", "\u200f", "مرحبا بك", "שלום עולם", "\u2067abc\u2069"]
CONTROL = [chr(c) for c in range(32)] + ["\x7f", "\x85", "\u2028", "\u2029"]
COMMANDS = [
    "reset",
    "/reset",
    "!reset",
    "purge",
    "purge u1",
    "forget me",
    "forget me confirm",
    "help",
    "status",
]


def hostile_text(rng: random.Random, max_chars: int) -> str:
    """One hostile message: a random mix of the categories above, random Unicode, or an extreme size."""
    kind = rng.randrange(8)
    if kind == 0:
        return "".join(rng.choice(ZERO_WIDTH + CONTROL + [" "]) for _ in range(rng.randrange(0, 40)))
    if kind == 1:
        return rng.choice(["x", "word ", "🙂", "é", "\u0301"]) * rng.randrange(max_chars, 20 * max_chars)
    if kind == 2:
        return rng.choice(COMMANDS) + rng.choice(["", " ", "\u200b", " please", " " + rng.choice(SPECIAL)])
    if kind == 3:
        return "".join(chr(rng.randrange(0x20, 0x10FFFF)) for _ in range(rng.randrange(1, 200))).replace(
            "\ud800", ""
        )
    pool = SPECIAL + ZERO_WIDTH + RTL + CONTROL + ["hello", "how are you", "@everyone", "<@123>", " "]
    return "".join(rng.choice(pool) for _ in range(rng.randrange(1, 30)))


@dataclass
class FuzzReport:
    inputs: int = 0
    crashes: int = 0
    unanswered: int = 0
    """Inputs that got no reply, or a reply that was empty (the bot never sends an empty message)."""
    errors_logged: int = 0
    """Warnings and errors logged, e.g. an exchange that could not be stored."""
    kinds: dict[str, int] = field(default_factory=dict)
    crash_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.crashes or self.unanswered or self.errors_logged)


async def run_fuzz(
    db_url: str, generator: Generator, config: Config, inputs: int, seed: int = 0
) -> FuzzReport:
    """Send `inputs` hostile messages through one engine (non-admins, a few channels); count crashes."""
    rng = random.Random(seed)
    report = FuzzReport()
    kinds: Counter[str] = Counter()
    errors = _ErrorLog()
    logging.getLogger().addHandler(errors)
    store = await open_store(db_url)
    try:
        engine = ChatEngine(store, generator, config)
        for n in range(inputs):
            text = hostile_text(rng, config.limits.max_message_chars)
            sent: list[str] = []

            async def send(reply: str, sent: list[str] = sent) -> None:
                sent.append(reply)

            msg = IncomingMessage("fuzz", f"fuzz:{n % 5}", f"u{n % 3}", text)
            report.inputs += 1
            try:
                reply = await engine.handle(msg, send)
            except Exception as exc:
                report.crashes += 1
                report.crash_samples.append(f"{text[:60]!r}: {exc!r}")
                continue
            kinds[reply.kind.value] += 1
            if len(sent) != 1 or not sent[0].strip():
                report.unanswered += 1
    finally:
        await store.close()
        logging.getLogger().removeHandler(errors)
    report.errors_logged = len(errors.messages)
    report.crash_samples += errors.messages[:5]
    report.kinds = dict(kinds)
    return report


# ---- command line ----


def _generator(model: str | None, config: Config) -> Generator:
    if not model:
        return EchoGenerator()
    from bot.config import override
    from bot.generation.backends import load_backend
    from bot.generation.scheduler import build_generator

    settings = override(config, "model", name=model)
    return build_generator(load_backend(settings), settings)  # as the bot serves: batched by default


async def _main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        db_url = args.db_url or f"sqlite+aiosqlite:///{Path(tmp) / 'loadtest.db'}"
        extra = {"generation": {"max_new_tokens": args.max_new_tokens, "timeout_seconds": 0}}
        if args.default_limits:  # the shipped bounds: a flood beyond them gets "busy" replies
            config = parse_config(extra)
        else:
            config = load_config(args.channels, args.per_channel, **extra)
        generator = _generator(args.model, config)
        load = await run_load(db_url, generator, config, args.channels, args.per_channel)
        result = {"load": asdict(load) | {"ok": load.ok}}
        if args.fuzz:
            fuzz_url = args.db_url or f"sqlite+aiosqlite:///{Path(tmp) / 'fuzz.db'}"
            fuzz = await run_fuzz(fuzz_url, generator, config, args.fuzz, args.seed)
            result["fuzz"] = asdict(fuzz) | {"ok": fuzz.ok}
        await generator.close()
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if all(part["ok"] for part in result.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.bench.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--per-channel", type=int, default=20)
    parser.add_argument("--fuzz", type=int, default=2000, help="hostile messages to send after the load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="a real model (`demo`, a hub id, a directory) instead of the echo")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--db-url", help="an empty database to use (default: a fresh SQLite file)")
    parser.add_argument(
        "--default-limits",
        action="store_true",
        help="keep the default back-pressure bounds (else they are raised to let the whole load in)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
