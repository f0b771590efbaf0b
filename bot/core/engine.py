"""The chat engine: one conversation per channel key, answered in order, channels in parallel.

`handle` answers a normalized message: a command from the command table, or a model reply built from the
channel's stored history. Adapters may split it in two: `accept` writes the message to the inbox (the
database) before anything else is done with it, and refuses a re-delivery of the same platform message;
`answer` then answers it. Whatever happens after the write (a cancelled shutdown, a kill, a crash) the
message is still there, and `recover` answers it at the next start.

The exchange (user turn and reply) is stored after the adapter delivered the reply, in the transaction
that marks the inbox message answered: the prompt holds what the user said and what the user saw. A split
reply whose later parts failed is stored as the parts that were posted; a reply that could not be sent at
all keeps the user's turn alone, as does a reply that could not be generated (the user gets an apology).

Between generation and delivery every model reply passes the safety filter (`ReplyFilter`, in
bot/core/safety.py): a flagged reply is generated again, then replaced by a neutral fallback, and is never
sent nor stored.

Before a message costs anything, `AccessPolicy` decides whether it is answered at all and `Admission` whether
it is answered now (bounded pending generations, cooldowns, rates). Every fault on the way (the model
raising or timing out, the database failing a read or a write, the platform refusing a send) ends in one
reply or one log line for that message only; other channels carry on. `drain` stops taking messages and
lets the ones in progress (counted from the moment an adapter takes them on, `tracking`) finish within a
deadline; those it must cancel are told the bot is restarting, and are answered by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.config import Config
from bot.core import metrics
from bot.core.access import AccessPolicy
from bot.core.admission import TOO_LONG_NOTICE, Admission, cut_to_limit
from bot.core.commands import CommandContext, PendingConfirmations, parse_invocation
from bot.core.generator import Generator, TurnRule, plain_turns
from bot.core.keyed_lock import KeyedLock, Reservation
from bot.core.message import (
    FindPosted,
    IncomingMessage,
    PartialDelivery,
    Reply,
    ReplyKind,
    Send,
    SenderFor,
)
from bot.core.safety import NoFilter, ReplyFilter, Verdict
from bot.core.sanitize import is_blank, storable_text
from bot.errors import GenerationUnavailable
from storage.types import AuditRecord, HistoryStore, InboxState, NewTurn, Role

logger = logging.getLogger(__name__)

EMPTY_MESSAGE_HINT = "Say something after mentioning me, or send `help` to see what I can do."
GENERATION_FAILED = "Sorry, I couldn't come up with a reply just now. Please try again."
GENERATION_TIMED_OUT = "Sorry, that took me too long to think about. Please try again."
MODEL_SERVER_DOWN = (
    "Sorry, my model server isn't answering right now. I've kept your message; please try again in a bit."
)
STORE_FAILED = "Sorry, I can't reach my memory just now. Please try again in a moment."
SHUTTING_DOWN = "I'm restarting right now; I'll answer this as soon as I'm back, in a moment."
NOTICE_SEND_SECONDS = 5.0
"""How long a restart notice may take to send during a shutdown."""


@dataclass(frozen=True, slots=True)
class DrainResult:
    finished: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message written to the inbox: `answer` it."""

    message: IncomingMessage
    inbox_id: int | None
    """None when the inbox could not be written (the database is down): it is answered with an apology."""
    late: bool = False
    """Taken on after a shutdown began: kept for the next start, and the user is told so."""


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    answering: int
    expired: int


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
        self._active: dict[asyncio.Task[Any], asyncio.Future[None]] = {}
        """The tasks handling a message, each with a future done when its handling ends (an adapter may
        handle messages inline in a task that lives on, like the console's)."""
        self._writes: set[asyncio.Future[Any]] = set()
        self._live: set[int] = set()
        """Inbox ids this process took on: recovery leaves them to the tasks answering them."""
        self._recovering: set[asyncio.Task[Reply]] = set()
        self._before_drain: set[asyncio.Task[Any]] = set()
        """The tasks taking messages on when the drain began: theirs are answered before it ends."""

    @property
    def accepting(self) -> bool:
        return self._accepting

    def _track(self, task: asyncio.Task[Any]) -> asyncio.Future[None] | None:
        if task in self._active:
            return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._active[task] = done
        return done

    def _untrack(self, task: asyncio.Task[Any], done: asyncio.Future[None] | None) -> None:
        if done is not None:
            del self._active[task]
            done.set_result(None)

    @contextmanager
    def tracking(self) -> Iterator[None]:
        """Count the current task as a message in progress: `drain` waits for it, and cancels it at the
        deadline. Adapters enter it as soon as they take a message on, before their own steps (channel
        lookups, typing indicators); `handle` and `answer` enter it too (once per task)."""
        task = asyncio.current_task()
        assert task is not None
        done = self._track(task)
        try:
            yield
        finally:
            self._untrack(task, done)

    async def handle(self, msg: IncomingMessage, send: Send) -> Reply:
        """Answer `msg` through `send`; return what was answered and whether it was delivered."""
        with self.tracking():
            # The message's place in its channel is taken now: messages handed over together are answered
            # in the order they were handed over, whichever inbox write finishes first.
            place = self._channels.reserve(msg.channel_key)
            try:
                accepted = await self.accept(msg)
                if accepted is None:
                    return Reply(text="", kind=ReplyKind.IGNORED, delivered=False)
                return await self.answer(accepted, send, place)
            finally:
                place.release()

    async def accept(self, msg: IncomingMessage) -> Accepted | None:
        """Decide whether `msg` is answered and write it to the inbox; None: not answered (access rules, or a
        re-delivery of a message already in the inbox). A message without a platform id gets one."""
        metrics.MESSAGES_RECEIVED.labels(platform=msg.platform).inc()
        if not self.access.allows(msg):
            return None
        if not msg.message_id:
            msg = replace(msg, message_id=uuid.uuid4().hex)
        assert msg.message_id is not None
        try:
            inbox_id = await self.store.receive(
                msg.platform, msg.message_id, msg.channel_key, msg.author_id, msg.to_json()
            )
        except Exception:
            metrics.ERRORS.labels(kind="storage").inc()
            logger.exception("could not write a message in %s to the inbox", msg.channel_key)
            return Accepted(msg, None)
        late = not self._accepting and asyncio.current_task() not in self._before_drain
        if inbox_id is None:
            logger.info("%s message %s was taken on before; ignoring it", msg.platform, msg.message_id)
            return None
        self._live.add(inbox_id)
        return Accepted(msg, inbox_id, late)

    def answer_soon(self, accepted: Accepted, send: Send) -> asyncio.Task[Reply]:
        """`answer` in a new task, counted by `drain` from now. Tasks start in creation order, and a
        channel's messages queue as they start: create them in the order the messages arrived."""
        task = asyncio.ensure_future(self.answer(accepted, send))
        done = self._track(task)
        task.add_done_callback(lambda finished: self._untrack(finished, done))
        return task

    async def give_up(self, accepted: Accepted, reason: str) -> None:
        """An accepted message the adapter cannot answer after all (no permission to post there)."""
        logger.info("not answering a message in %s: %s", accepted.message.channel_key, reason)
        if accepted.inbox_id is not None:
            self._live.discard(accepted.inbox_id)
            try:
                await self.store.finish(accepted.inbox_id, InboxState.FAILED)
            except Exception:
                metrics.ERRORS.labels(kind="storage").inc()
                logger.exception("could not record giving up a message in %s", accepted.message.channel_key)

    async def answer(self, accepted: Accepted, send: Send, place: Reservation | None = None) -> Reply:
        """Answer an accepted message through `send`, and record the outcome in the inbox. `place`: the
        message's place in its channel's queue, if it took one when it arrived."""
        msg, inbox_id = accepted.message, accepted.inbox_id
        with self.tracking():
            if inbox_id is None:
                return await self._deliver(msg, send, STORE_FAILED, ReplyKind.NOTICE)
            if accepted.late:
                # Kept in the inbox as received: the next start answers it.
                return await self._deliver(msg, send, SHUTTING_DOWN, ReplyKind.NOTICE)
            delivering = False

            def started_delivering() -> None:
                nonlocal delivering
                delivering = True

            try:
                return await self._handle(accepted, send, started_delivering, place)
            except asyncio.CancelledError:
                if not delivering:  # cancelled by a drain before its reply went out: say so, answer later
                    with contextlib.suppress(BaseException):
                        async with asyncio.timeout(NOTICE_SEND_SECONDS):
                            await self._deliver(msg, send, SHUTTING_DOWN, ReplyKind.NOTICE)
                raise
            finally:
                self._live.discard(inbox_id)

    async def recover(
        self, platform: str, sender_for: SenderFor, find_posted: FindPosted | None = None
    ) -> RecoveryResult:
        """Answer the platform's inbox messages that were taken on but never answered (the process stopped
        first), oldest first, each through `sender_for(message)`; those older than
        `inbox.recover_max_age_seconds`, or that the adapter cannot answer any more, are marked expired.
        `find_posted` (if the platform can tell) finds a reply that was posted but not recorded: that one is
        recorded as the answer, and not posted again.

        Call it before the adapter receives new messages: the recovered ones then come first in their
        conversations. It returns once they are queued; they are answered in the background (and counted by
        `drain`)."""
        entries = await self.store.unanswered(platform)
        max_age = timedelta(seconds=self.config.inbox.recover_max_age_seconds)
        now = datetime.now(UTC)
        answering = expired = 0
        for entry in entries:
            if entry.id in self._live:
                continue
            msg = IncomingMessage.from_json(entry.message)
            send = sender_for(msg) if now - entry.received_at <= max_age else None
            if send is None:
                age = (now - entry.received_at).total_seconds()
                logger.warning(
                    "not answering %s message %s in %s after a restart: it arrived %.0fs ago; marked expired",
                    platform,
                    entry.platform_id,
                    entry.channel_key,
                    age,
                )
                await self.store.finish(entry.id, InboxState.EXPIRED)
                expired += 1
                continue
            self._live.add(entry.id)
            place = self._channels.reserve(msg.channel_key)  # queued in inbox order, before anything new
            task = asyncio.create_task(
                self._answer_recovered(Accepted(msg, entry.id), send, place, find_posted)
            )
            self._recovering.add(task)
            task.add_done_callback(self._recovering.discard)
            answering += 1
        if answering or expired:
            logger.info(
                "%s: answering %d messages left unanswered before the restart, %d expired",
                platform,
                answering,
                expired,
            )
        return RecoveryResult(answering=answering, expired=expired)

    async def recently_received(self, platform: str) -> list[IncomingMessage]:
        """The platform's messages taken on within `inbox.recover_max_age_seconds`, answered or not, oldest
        first: where an adapter whose platform does not deliver missed events again (Discord) looks for
        messages that reached the process but not the inbox before it stopped."""
        since = datetime.now(UTC) - timedelta(seconds=self.config.inbox.recover_max_age_seconds)
        try:
            entries = await self.store.received_since(platform, since)
        except Exception:
            metrics.ERRORS.labels(kind="storage").inc()
            logger.exception("could not read the %s inbox", platform)
            return []
        return [IncomingMessage.from_json(entry.message) for entry in entries]

    async def _answer_recovered(
        self, accepted: Accepted, send: Send, place: Reservation, find_posted: FindPosted | None
    ) -> Reply:
        try:
            if find_posted is not None:
                async with place:
                    posted = await self._posted_before(accepted, find_posted)
                    if posted is not None:
                        return posted
                place = self._channels.reserve(accepted.message.channel_key)
            return await self.answer(accepted, send, place)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("failed to answer a recovered message in %s", accepted.message.channel_key)
            return Reply(text="", kind=ReplyKind.IGNORED, delivered=False)
        finally:
            place.release()

    async def _posted_before(self, accepted: Accepted, find_posted: FindPosted) -> Reply | None:
        """The reply the platform shows for a recovered message, recorded as its answer; None if none."""
        msg = accepted.message
        try:
            parts = list(await find_posted(msg))
        except Exception as exc:
            logger.warning("could not check for an earlier reply in %s: %s", msg.channel_key, exc)
            return None
        if not parts or accepted.inbox_id is None:
            return None
        shown = "\n".join(text for _, text in parts)
        text, _cut = cut_to_limit(storable_text(msg.text).strip(), self.config.limits.max_message_chars)
        turns = [NewTurn(Role.USER, msg.author_id, text), NewTurn(Role.BOT, "bot", shown)]
        ids = [i for i, _ in parts]
        self._live.discard(accepted.inbox_id)
        await self.store.finish(accepted.inbox_id, InboxState.ANSWERED, ids, msg.channel_key, turns)
        logger.info(
            "a reply in %s was posted before the restart; recorded it, not posting it again", msg.channel_key
        )
        return Reply(text=shown, kind=ReplyKind.CHAT, delivered=True, reply_ids=tuple(ids))

    def _hold(self, key: str, place: Reservation | None) -> AbstractAsyncContextManager[None]:
        return place if place is not None else self._channels.hold(key)

    async def _handle(
        self, accepted: Accepted, send: Send, delivering: Callable[[], None], place: Reservation | None
    ) -> Reply:
        msg = accepted.message
        text = storable_text(msg.text).strip()
        if is_blank(text):
            return await self._reply(accepted, send, EMPTY_MESSAGE_HINT, ReplyKind.NOTICE, delivering)
        invocation = parse_invocation(text)
        if invocation is None:
            refusal = self.admission.check(msg)
            if refusal is not None:
                logger.info("not answering %s in %s now: %s", msg.author_id, msg.channel_key, refusal.reason)
                return await self._reply(accepted, send, refusal.text, ReplyKind.NOTICE, delivering)
            with self.admission.slot(msg.channel_key):
                async with self._hold(msg.channel_key, place):
                    return await self._chat(accepted, text, send, delivering)
        command, args = invocation
        async with self._hold(msg.channel_key, place):
            if command.admin_only and not msg.administers_here():
                logger.info("refused %s to %s in %s", command.name, msg.author_id, msg.channel_key)
                notice = f"Sorry, only admins can use `{command.name}` here."
                return await self._reply(accepted, send, notice, ReplyKind.NOTICE, delivering)
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
                return await self._reply(accepted, send, STORE_FAILED, ReplyKind.NOTICE, delivering)
            return await self._reply(accepted, send, answer, ReplyKind.COMMAND, delivering)

    async def _chat(self, accepted: Accepted, text: str, send: Send, delivering: Callable[[], None]) -> Reply:
        msg = accepted.message
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
            return await self._reply(accepted, send, STORE_FAILED, ReplyKind.NOTICE, delivering)
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
            return await self._reply(accepted, send, GENERATION_TIMED_OUT, ReplyKind.NOTICE, delivering, text)
        except GenerationUnavailable as exc:  # counted as a generation error by `observe_generation`
            logger.warning("no reply in %s: %s", msg.channel_key, exc)
            return await self._reply(accepted, send, MODEL_SERVER_DOWN, ReplyKind.NOTICE, delivering, text)
        except Exception:
            logger.exception("generation failed in %s", msg.channel_key)
            return await self._reply(accepted, send, GENERATION_FAILED, ReplyKind.NOTICE, delivering, text)
        generated = time.perf_counter()
        shown = f"{answer}\n{TOO_LONG_NOTICE.format(chars=len(text))}" if cut else answer
        reply = await self._reply(accepted, send, shown, ReplyKind.CHAT, delivering, text, answer)
        if reply.delivered:
            logger.info(
                "%s %s in %s: %d history turns, generate %.2fs, total %.2fs",
                "answered" if reply.complete else "sent part of a reply to",
                msg.author_id,
                msg.channel_key,
                len(history),
                generated - started,
                time.perf_counter() - started,
            )
        return reply

    async def _reply(
        self,
        accepted: Accepted,
        send: Send,
        text: str,
        kind: ReplyKind,
        delivering: Callable[[], None],
        user_text: str | None = None,
        answer: str | None = None,
    ) -> Reply:
        """Send `text` and record the outcome in the inbox, with the turns it adds to the history, in one
        transaction: the user's turn (`user_text`) when there is one, and the model's `answer` as far as it
        was delivered. Once sending starts it is shielded: a drain's cancellation never separates a posted
        reply from its record."""
        delivering()
        work = asyncio.ensure_future(self._send_and_record(accepted, send, text, kind, user_text, answer))
        self._writes.add(work)
        work.add_done_callback(self._writes.discard)
        return await asyncio.shield(work)

    async def _send_and_record(
        self,
        accepted: Accepted,
        send: Send,
        text: str,
        kind: ReplyKind,
        user_text: str | None,
        answer: str | None,
    ) -> Reply:
        msg = accepted.message
        reply = await self._deliver(msg, send, text, kind)
        turns: list[NewTurn] = []
        if user_text is not None:
            turns.append(NewTurn(Role.USER, msg.author_id, user_text))
        if answer is not None and reply.delivered:
            # What the user saw: the whole answer, or the parts of it that were posted.
            turns.append(NewTurn(Role.BOT, "bot", answer if reply.complete else reply.text))
        if kind is ReplyKind.CHAT:
            state = InboxState.ANSWERED if reply.delivered else InboxState.FAILED
        elif user_text is not None:  # an apology: no reply could be generated
            state = InboxState.FAILED
        else:
            state = InboxState.ANSWERED if reply.delivered else InboxState.FAILED
        if accepted.inbox_id is None:
            if turns:
                await self._store_turns(msg, turns)
            return reply
        try:
            await self.store.finish(accepted.inbox_id, state, reply.reply_ids, msg.channel_key, turns)
        except Exception:
            # The transaction leaves history consistent; the message stays in the inbox as received.
            metrics.ERRORS.labels(kind="storage").inc()
            what = "was sent" if reply.delivered else "could not be sent"
            logger.exception("the reply in %s %s but could not be stored", msg.channel_key, what)
        return reply

    async def _store_turns(self, msg: IncomingMessage, turns: list[NewTurn]) -> None:
        try:
            await self.store.append_turns(msg.channel_key, turns)
        except Exception:
            metrics.ERRORS.labels(kind="storage").inc()
            logger.exception("turns in %s could not be stored", msg.channel_key)

    async def drain(self, deadline: float) -> DrainResult:
        """Stop taking messages; give those in progress `deadline` seconds, then cancel the rest.

        Messages taken on meanwhile are counted too. A cancelled message stays in the inbox, its user is told
        the bot is restarting, and the next start answers it. Replies already being sent are still sent and
        recorded: those are awaited after the deadline too.
        """
        self._accepting = False
        self._before_drain = set(self._active)
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        seen: set[asyncio.Task[Any]] = set()
        cancelled: set[asyncio.Task[Any]] = set()
        while self._active:
            active = dict(self._active)
            seen |= set(active)
            remaining = end - loop.time()
            if remaining <= 0:
                cancelled = set(active)
                for task in cancelled:
                    task.cancel()
                await asyncio.wait(active.values())  # each handling unwinds and marks itself done
                break
            await asyncio.wait(active.values(), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        while self._writes:
            await asyncio.gather(*set(self._writes), return_exceptions=True)
        finished = len(seen) - len(cancelled)
        if seen:
            logger.info("drained: %d answers finished, %d cancelled", finished, len(cancelled))
        return DrainResult(finished=finished, cancelled=len(cancelled))

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
            ids: Sequence[str] | None = await send(text)
        except PartialDelivery as partial:
            metrics.ERRORS.labels(kind="send").inc()
            logger.warning(
                "could not send all of a %s reply in %s: %d part(s) posted, then: %s",
                kind.value,
                msg.channel_key,
                len(partial.parts),
                partial.cause,
            )
            if not partial.parts:
                return Reply(text=text, kind=kind, delivered=False)
            metrics.REPLIES_SENT.labels(platform=msg.platform, kind=kind.value).inc()
            shown = "\n".join(part for _, part in partial.parts)
            ids = tuple(i for i, _ in partial.parts if i)
            return Reply(text=shown, kind=kind, delivered=True, reply_ids=ids, complete=False)
        except Exception as exc:
            metrics.ERRORS.labels(kind="send").inc()
            logger.warning("could not send a %s reply in %s: %s", kind.value, msg.channel_key, exc)
            return Reply(text=text, kind=kind, delivered=False)
        metrics.REPLIES_SENT.labels(platform=msg.platform, kind=kind.value).inc()
        return Reply(text=text, kind=kind, delivered=True, reply_ids=tuple(ids or ()))
