"""The chat engine: one conversation per channel key, answered in order, channels in parallel.

`handle` answers a normalized message: a command from the command table, or a model reply built from the
channel's stored history. The exchange (user turn and reply) is stored only after the adapter delivered the
reply, in one transaction: a reply that failed to send never becomes history, so it cannot poison later
prompts. When no reply could be generated (the model failed or timed out, a remote model server is down),
the user gets an apology and their turn is stored alone: what people said is never lost, and the next
prompt includes it.

Between generation and delivery every model reply passes the safety filter (`ReplyFilter`, in
bot/core/safety.py): a flagged reply is generated again, then replaced by a neutral fallback, and is never
sent nor stored.

Before a message costs anything, `AccessPolicy` decides whether it is answered at all and `Admission` whether
it is answered now (bounded pending generations, cooldowns, rates). Every fault on the way (the model
raising or timing out, the database failing a read or a write, the platform refusing a send) ends in one
reply or one log line for that message only; other channels carry on. `drain` stops taking messages and
lets the ones in progress finish within a deadline, for a clean shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from bot.config import Config
from bot.core import metrics
from bot.core.access import AccessPolicy
from bot.core.admission import TOO_LONG_NOTICE, Admission, cut_to_limit
from bot.core.commands import CommandContext, PendingConfirmations, parse_invocation
from bot.core.generator import Generator, TurnRule, plain_turns
from bot.core.keyed_lock import KeyedLock
from bot.core.message import IncomingMessage, Reply, ReplyKind, Send
from bot.core.safety import NoFilter, ReplyFilter, Verdict
from bot.core.sanitize import is_blank, storable_text
from bot.errors import GenerationUnavailable
from storage.types import AuditRecord, HistoryStore, NewTurn, Role

logger = logging.getLogger(__name__)

EMPTY_MESSAGE_HINT = "Say something after mentioning me, or send `help` to see what I can do."
GENERATION_FAILED = "Sorry, I couldn't come up with a reply just now. Please try again."
GENERATION_TIMED_OUT = "Sorry, that took me too long to think about. Please try again."
MODEL_SERVER_DOWN = (
    "Sorry, my model server isn't answering right now. I've kept your message; please try again in a bit."
)
STORE_FAILED = "Sorry, I can't reach my memory just now. Please try again in a moment."
SHUTTING_DOWN = "I'm restarting right now. Please send that again in a minute."


@dataclass(frozen=True, slots=True)
class DrainResult:
    finished: int
    cancelled: int


class ChatEngine:
    """Answers messages; the adapters own the platforms, the store owns persistence."""

    def __init__(
        self,
        store: HistoryStore,
        generator: Generator,
        config: Config,
        *,
        turn_rule: TurnRule = plain_turns,
        reply_filter: ReplyFilter | None = None,
    ) -> None:
        self.store = store
        self.generator = generator
        self.config = config
        self.safety: ReplyFilter = reply_filter or NoFilter()
        """What every model reply (and, with `safety.check_input`, every message) passes before it is used."""
        self.turn_rule = turn_rule
        """How the stored history and the new message become the model's turns (the model family's rule)."""
        self._channels = KeyedLock()
        self.access = AccessPolicy(config.access)
        self.admission = Admission(config.limits)
        self.confirmations = PendingConfirmations()
        """Commands waiting for their `confirm` (`forget me`): kept by the engine, handed to commands."""
        self._accepting = True
        self._active: dict[asyncio.Future[None], asyncio.Task[Any] | None] = {}
        """One future per message being handled, done when its handling ends, and the task handling it (an
        adapter may handle messages inline in a task that lives on, like the console's)."""
        self._writes: set[asyncio.Future[None]] = set()

    async def handle(self, msg: IncomingMessage, send: Send) -> Reply:
        """Answer `msg` through `send`; return what was answered and whether it was delivered."""
        metrics.MESSAGES_RECEIVED.labels(platform=msg.platform).inc()
        if not self.access.allows(msg):
            return Reply(text="", kind=ReplyKind.IGNORED, delivered=False)
        if not self._accepting:
            return await self._deliver(msg, send, SHUTTING_DOWN, ReplyKind.NOTICE)
        done = asyncio.get_running_loop().create_future()
        self._active[done] = asyncio.current_task()
        try:
            return await self._handle(msg, send)
        finally:
            del self._active[done]
            done.set_result(None)

    async def _handle(self, msg: IncomingMessage, send: Send) -> Reply:
        text = storable_text(msg.text).strip()
        if is_blank(text):
            return await self._deliver(msg, send, EMPTY_MESSAGE_HINT, ReplyKind.NOTICE)
        invocation = parse_invocation(text)
        if invocation is None:
            refusal = self.admission.check(msg)
            if refusal is not None:
                logger.info("not answering %s in %s now: %s", msg.author_id, msg.channel_key, refusal.reason)
                return await self._deliver(msg, send, refusal.text, ReplyKind.NOTICE)
            with self.admission.slot(msg.channel_key):
                async with self._channels.hold(msg.channel_key):
                    return await self._chat(msg, text, send)
        command, args = invocation
        async with self._channels.hold(msg.channel_key):
            if command.admin_only and not msg.administers_here():
                logger.info("refused %s to %s in %s", command.name, msg.author_id, msg.channel_key)
                notice = f"Sorry, only admins can use `{command.name}` here."
                return await self._deliver(msg, send, notice, ReplyKind.NOTICE)
            logger.info("command %s by %s in %s", command.name, msg.author_id, msg.channel_key)
            try:
                context = CommandContext(
                    message=msg,
                    args=args,
                    store=self.store,
                    model=self.generator.info,
                    confirmations=self.confirmations,
                    safety=self.safety,
                )
                answer = await command.handler(context)
            except Exception:
                metrics.ERRORS.labels(kind="command").inc()
                logger.exception("command %s failed in %s", command.name, msg.channel_key)
                return await self._deliver(msg, send, STORE_FAILED, ReplyKind.NOTICE)
            return await self._deliver(msg, send, answer, ReplyKind.COMMAND)

    async def _chat(self, msg: IncomingMessage, text: str, send: Send) -> Reply:
        started = time.perf_counter()
        text, cut = cut_to_limit(text, self.config.limits.max_message_chars)
        if self.config.safety.check_input and (await self._check(msg, text, "input")).flagged:
            # Neither answered by the model nor stored: it never becomes context for later replies.
            if self.config.safety.input_action == "ignore":
                return Reply(text="", kind=ReplyKind.IGNORED, delivered=False)
            return await self._deliver(msg, send, self.config.safety.input_reply, ReplyKind.NOTICE)
        try:
            history = await self.store.recent_turns(msg.channel_key, self.config.history.max_turns)
        except Exception:
            metrics.ERRORS.labels(kind="storage").inc()
            logger.exception("could not read the history of %s", msg.channel_key)
            return await self._deliver(msg, send, STORE_FAILED, ReplyKind.NOTICE)
        turns = self.turn_rule(history, text)
        try:
            async with asyncio.timeout(self.config.generation.timeout_seconds or None):
                answer = await self._acceptable_answer(msg, turns)
        except TimeoutError:
            metrics.ERRORS.labels(kind="generation_timeout").inc()
            logger.warning(
                "generation in %s took over %.0fs; gave up",
                msg.channel_key,
                self.config.generation.timeout_seconds,
            )
            return await self._unanswered(msg, text, send, GENERATION_TIMED_OUT)
        except GenerationUnavailable as exc:  # counted as a generation error by `observe_generation`
            logger.warning("no reply in %s: %s", msg.channel_key, exc)
            return await self._unanswered(msg, text, send, MODEL_SERVER_DOWN)
        except Exception:
            logger.exception("generation failed in %s", msg.channel_key)
            return await self._unanswered(msg, text, send, GENERATION_FAILED)
        generated = time.perf_counter()
        shown = f"{answer}\n{TOO_LONG_NOTICE.format(chars=len(text))}" if cut else answer
        reply = await self._deliver(msg, send, shown, ReplyKind.CHAT)
        if reply.delivered:
            exchange = [NewTurn(Role.USER, msg.author_id, text), NewTurn(Role.BOT, "bot", answer)]
            await self._store(msg, exchange, "the reply in %s was sent but could not be stored")
        logger.info(
            "answered %s in %s: %d history turns, generate %.2fs, total %.2fs",
            msg.author_id,
            msg.channel_key,
            len(history),
            generated - started,
            time.perf_counter() - started,
        )
        return reply

    async def _unanswered(self, msg: IncomingMessage, text: str, send: Send, apology: str) -> Reply:
        """No reply could be generated: apologize, and keep the user's turn (alone) in the history."""
        reply = await self._deliver(msg, send, apology, ReplyKind.NOTICE)
        await self._store(msg, [NewTurn(Role.USER, msg.author_id, text)], "an unanswered turn in %s was lost")
        return reply

    async def _store(self, msg: IncomingMessage, turns: list[NewTurn], failure_log: str) -> None:
        """Store turns in one transaction; shielded, so a shutdown never leaves them half-written."""
        write = asyncio.ensure_future(self.store.append_turns(msg.channel_key, turns))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        try:
            await asyncio.shield(write)
        except Exception:
            # The reply is out; only its memory is lost, and the transaction leaves history consistent.
            metrics.ERRORS.labels(kind="storage").inc()
            logger.exception(failure_log, msg.channel_key)

    async def first_delivery(self, event_key: str) -> bool:
        """Record a platform's event id; False when it was seen before (a re-delivery, not a new message)."""
        return await self.store.claim_event(event_key)

    async def drain(self, deadline: float) -> DrainResult:
        """Stop taking messages; give those in progress `deadline` seconds, then cancel the rest.

        Exchanges already delivered are still written: their writes are awaited after the deadline too.
        """
        self._accepting = False
        active = dict(self._active)
        pending: set[asyncio.Future[None]] = set()
        if active:
            _, pending = await asyncio.wait(active, timeout=deadline)
            for done in pending:
                task = active[done]
                if task is not None:
                    task.cancel()
            if pending:
                await asyncio.wait(pending)  # each handling unwinds (stores nothing) and marks itself done
        await asyncio.gather(*set(self._writes), return_exceptions=True)
        finished = len(active) - len(pending)
        if active:
            logger.info("drained: %d answers finished, %d cancelled", finished, len(pending))
        return DrainResult(finished=finished, cancelled=len(pending))

    async def _generate(self, turns: list[str]) -> str:
        """The model's reply; an empty one is retried once, then replaced: never send an empty message.

        Empty means nothing visible: a reply of zero-width spaces or direction marks counts as empty too."""
        for _attempt in range(2):
            with metrics.observe_generation():
                answer = (await self.generator.generate(turns)).strip()
            if not is_blank(answer):
                return answer
        logger.info("model gave an empty reply twice; using the fallback reply")
        return self.config.generation.fallback_reply

    async def _acceptable_answer(self, msg: IncomingMessage, turns: list[str]) -> str:
        """A reply that passed the safety filter: a flagged one is generated again (a fresh sample) up to
        `safety.regenerations` times, then replaced by `safety.fallback_reply`. Flagged text is never
        returned, so it is never sent nor stored."""
        settings = self.config.safety
        # Greedy decoding would give the same reply again: straight to the fallback.
        attempts = 1 + (settings.regenerations if self.config.generation.do_sample else 0)
        for attempt in range(attempts):
            answer = await self._generate(turns)
            if not (await self._check(msg, answer, "reply")).flagged:
                if attempt:
                    logger.info(
                        "reply in %s passed the safety filter after %d regenerations",
                        msg.channel_key,
                        attempt,
                    )
                return answer
        logger.info(
            "no acceptable reply in %s after %d attempts; sent the fallback", msg.channel_key, attempts
        )
        return settings.fallback_reply

    async def _check(self, msg: IncomingMessage, text: str, what: str) -> Verdict:
        """The safety filter's verdict on a reply or an input, counted and audited when flagged.

        A reply that cannot be checked (the filter raised) counts as flagged: unchecked text is never sent.
        A message that cannot be checked is answered (its reply is still checked).
        """
        try:
            verdict = await self.safety.check(text, msg.channel_key)
        except Exception:
            metrics.ERRORS.labels(kind="safety").inc()
            logger.exception("the safety filter failed on a %s in %s", what, msg.channel_key)
            if what == "input":
                return Verdict(flagged=False)
            verdict = Verdict(flagged=True, reason="error", detail="the check failed")
        if not verdict.flagged:
            return verdict
        metrics.SAFETY_FILTERED.labels(what=what, reason=verdict.reason).inc()
        detail = verdict.detail
        if self.config.safety.log_text:
            detail = f"{detail}; text: {text!r}"
        target = msg.channel_key if what == "reply" else f"{msg.channel_key} {msg.platform}:{msg.author_id}"
        try:
            await self.store.record_audit(AuditRecord("safety", f"filtered {what}", target, detail))
        except Exception:
            metrics.ERRORS.labels(kind="storage").inc()
            logger.exception("could not record a filtered %s in the audit log", what)
        return verdict

    async def _deliver(self, msg: IncomingMessage, send: Send, text: str, kind: ReplyKind) -> Reply:
        try:
            await send(text)
        except Exception as exc:
            metrics.ERRORS.labels(kind="send").inc()
            logger.warning("could not send a %s reply in %s: %s", kind.value, msg.channel_key, exc)
            return Reply(text=text, kind=kind, delivered=False)
        metrics.REPLIES_SENT.labels(platform=msg.platform, kind=kind.value).inc()
        return Reply(text=text, kind=kind, delivered=True)
