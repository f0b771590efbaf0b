"""The crash test: the real `dialobot run` process, killed again and again while people talk to it.

`python -m bot.bench.chaos` starts the fake Discord and the fake Slack (`bot.bench.fake_discord`,
`bot.bench.fake_slack`) on 127.0.0.1 and the real `dialobot run` against them, with the test harness's echo
as its model (`model.backend = "scripted"`, each reply "thinking" `--think` seconds or up to twice that). It
sends a steady stream of messages: two Discord channels, a thread and two DMs, a Slack channel, a thread and
two DMs, with duplicate deliveries mixed in. Meanwhile it kills the bot at random moments, with SIGKILL or
SIGTERM, during start-up, generation and sends, and starts it again, until the stream has ended and the bot
is idle. Then it counts, from what the fakes received and what the database holds: messages sent, answered
exactly once, answered twice or more, never answered, and history rows that disagree with what the users saw.

What the platforms do around a dead bot is modelled on what they do: Slack sends an event again while it is
not acknowledged (up to 3 retries) and now and then re-sends an acknowledged one; Discord sends events only
to a connected bot and never again to a new session: what was posted while the bot was down, or reached a
process that died before taking it on, stays in its channel for the bot to read back. The counts go to
stdout as JSON; docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.bench import fake_slack
from bot.bench.fake_discord import FakeDiscord
from bot.testing import empty_postgres

logger = logging.getLogger(__name__)

SHUTDOWN_DEADLINE = 2.0
"""Discord replays the events of a dropped connection's last this many seconds to the next connection."""
SLACK_ACK_WAIT = 3.0
"""Slack sends an event again when it is not acknowledged within 3 s."""
SLACK_RETRIES = 3


@dataclass
class ChaosResult:
    database: str
    kills: int = 0
    sigkills: int = 0
    sigterms: int = 0
    kills_by_phase: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    deliveries: int = 0
    """Events delivered to the bot, duplicates included."""
    posted_while_away: int = 0
    """Discord messages posted while no bot was connected: no event, the bot must read them back."""
    answered_once: int = 0
    answered_twice: int = 0
    never_answered: int = 0
    never_reached_the_inbox: int = 0
    """Of the never answered: not even in the inbox (posted while away and never read back, or sent to a
    connection that died before the bot wrote them down)."""
    disagreements: int = 0
    out_of_order: int = 0
    restart_notices: int = 0
    inbox_states: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    """Up to 20 examples of what went wrong, for whoever reads the figures."""

    @property
    def ok(self) -> bool:
        """Every message answered exactly once (all are younger than the recovery age), history as the users
        saw it."""
        return self.answered_twice == 0 and self.never_answered == 0 and self.disagreements == 0


@dataclass
class Sent:
    """One message a user sent, and where."""

    number: int
    platform: str
    conversation: str
    text: str  # what the bot sees (no mention)
    at: float
    payload: dict[str, Any] = field(default_factory=dict)


def _marker(number: int) -> str:
    return f"m{number:05d}"


class Chaos:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = workdir
        self.discord = FakeDiscord()
        self.slack = fake_slack.FakeSlack()
        self.sent: list[Sent] = []
        self.result = ChaosResult(database="postgresql" if args.db_url else "sqlite")
        self.proc: asyncio.subprocess.Process | None = None
        self.spawned_at = 0.0
        self.connected_since_spawn = False
        self.stream_done = asyncio.Event()
        self._envelopes: dict[str, tuple[dict, int]] = {}  # Slack event id -> (payload, retries so far)
        self._acked_events: set[str] = set()
        self._log = open(workdir / "bot.log", "ab")  # noqa: SIM115 (kept open for every run of the bot)

    # ---- the world ----

    def build(self) -> None:
        d = self.discord
        self.guild = d.add_guild("chaos")
        self.general = d.add_channel(self.guild, "general")
        self.chat = d.add_channel(self.guild, "chat")  # always answered, no mention
        self.thread = d.add_thread(self.general, "side")
        self.users = [d.user(f"user{i}") for i in range(4)]
        self.dms = [d.add_dm(self.users[0]), d.add_dm(self.users[1])]
        self.mention = f"<@{d.bot_user['id']}>"
        self.slack_thread = "1700000000.000001"

    def config_text(self) -> str:
        storage = (
            'url_env = "DIALOBOT_CHAOS_DB_URL"' if self.args.db_url else f'path = "{self.workdir / "bot.db"}"'
        )
        return f"""
[model]
backend = "scripted"

[storage]
{storage}

[history]
max_turns = 6

[limits]
max_message_chars = 4000

[shutdown]
deadline_seconds = {SHUTDOWN_DEADLINE}

[inbox]
recover_max_age_seconds = {self.args.recover_age}

[discord]
enabled = true
api_url = "{self.discord.api_base}"
always_answer_channel_ids = ["{self.chat["id"]}"]

[slack]
enabled = true
api_url = "{self.slack.api_url}"

[logging]
level = "INFO"
"""

    # ---- the bot process ----

    async def spawn(self) -> None:
        exe = shutil.which("dialobot", path=str(Path(sys.executable).parent))
        command = [exe] if exe else [sys.executable, "-m", "bot"]
        env = dict(os.environ)
        env.update(
            DISCORD_BOT_TOKEN=self.discord.token,
            SLACK_BOT_TOKEN=fake_slack.BOT_TOKEN,
            SLACK_APP_TOKEN=fake_slack.APP_TOKEN,
            DIALOBOT_SCRIPTED_DELAY_SECONDS=str(self.args.think),
            DIALOBOT_DATA_DIR=str(self.workdir),
        )
        if self.args.db_url:
            env["DIALOBOT_CHAOS_DB_URL"] = self.args.db_url
        self._log.write(f"\n==== start {time.strftime('%H:%M:%S')} ====\n".encode())
        self._log.flush()
        self.proc = await asyncio.create_subprocess_exec(
            *command, "run", "--config", str(self.workdir / "chaos.toml"), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        self.spawned_at = time.monotonic()
        self.discord_conn_at_spawn = self.discord.connections.get(0)
        self.slack_sockets_at_spawn = len(self.slack.log)

    def _connected(self) -> bool:
        conn = self.discord.connections.get(0)
        discord_up = conn is not None and conn is not self.discord_conn_at_spawn and not conn.ws.closed
        slack_up = any(not ws.closed for ws in self.slack._sockets)
        return discord_up and slack_up

    def phase(self) -> str:
        if not self._connected():
            return "start-up"
        if self.discord.in_flight or self.slack.in_flight:
            return "sending"
        return "generation" if self._unanswered_count() else "idle"

    async def kill(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.result.kills += 1
        self.result.kills_by_phase[self.phase()] = self.result.kills_by_phase.get(self.phase(), 0) + 1
        if sig is signal.SIGKILL:
            self.result.sigkills += 1
        else:
            self.result.sigterms += 1
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=60)
        except TimeoutError:
            self.result.problems.append("a SIGTERM did not stop the bot within 60 s; killed")
            self.proc.kill()
            await self.proc.wait()

    async def wait_connected(self, within: float = 60.0) -> bool:
        end = time.monotonic() + within
        while time.monotonic() < end:
            if self._connected():
                return True
            if self.proc is not None and self.proc.returncode is not None:
                return False
            await asyncio.sleep(0.05)
        return False

    # ---- the platforms ----

    async def discord_dispatch(self, payload: dict) -> None:
        """A user posts in a Discord channel: the message is in the channel from now on, and the connected
        bot (if one is) gets MESSAGE_CREATE. A bot that is down, starting, or dying gets no event, as on
        Discord: it must read the channel back when it connects again."""
        self.discord.post(payload)
        conn = self.discord.connections.get(0)
        if conn is None or conn.ws.closed:
            self.result.posted_while_away += 1
            return
        try:
            await conn.send(0, payload, "MESSAGE_CREATE")
        except (ConnectionError, RuntimeError):
            self.result.posted_while_away += 1
            return
        self.result.deliveries += 1

    async def slack_send(self, event_id: str, payload: dict, retry: int = 0, reason: str = "") -> None:
        """Push an event to the connected bot (waiting for one); resend it while it is not acknowledged."""
        while True:
            sockets = [ws for ws in self.slack._sockets if not ws.closed]
            if sockets:
                try:
                    envelope = await self.slack.send_event(
                        payload, retry_attempt=retry, retry_reason=reason, wait_for_ack=False
                    )
                except (ConnectionError, RuntimeError, StopIteration):
                    await asyncio.sleep(0.05)
                    continue
                self.result.deliveries += 1
                asyncio.get_running_loop().create_task(
                    self._slack_watch_ack(event_id, payload, envelope, retry)
                )
                return
            await asyncio.sleep(0.05)

    async def _slack_watch_ack(self, event_id: str, payload: dict, envelope: str, retry: int) -> None:
        end = time.monotonic() + SLACK_ACK_WAIT
        while time.monotonic() < end:
            if any(a.get("envelope_id") == envelope for a in self.slack.acks[-200:]):
                self._acked_events.add(event_id)
                return
            await asyncio.sleep(0.05)
        if event_id in self._acked_events:
            return
        if retry >= SLACK_RETRIES:
            self.result.problems.append(f"Slack gave up on event {event_id}: never acknowledged")
            return
        await self.slack_send(event_id, payload, retry + 1, "timeout")

    # ---- the stream ----

    def _next_message(self, number: int) -> tuple[str, str, dict | None, dict | None]:
        """(platform, conversation, Discord payload or None, Slack event or None)"""
        marker = _marker(number)
        words = self.rng.choice(["hello there", "how are you", "tell me more", "what now", "ok then"])
        text = f"{marker} {words}"
        if self.rng.random() < 0.08:  # a long one: the Discord reply is split in two
            text += " " + " ".join(f"w{i}" for i in range(500))
        user = self.rng.choice(self.users)
        where = self.rng.randrange(9)
        d = self.discord
        if where == 0:
            return "discord", "general", d.message(self.general, user, f"{self.mention} {text}"), None
        if where == 1:
            return "discord", "chat", d.message(self.chat, user, text), None
        if where == 2:
            return "discord", "thread", d.message(self.thread, user, f"{self.mention} {text}"), None
        if where in (3, 4):
            dm = self.dms[where - 3]
            return "discord", f"dm{where - 3}", d.message(dm, dm["recipients"][0], text), None
        ts = f"{1700001000 + number}.{number:06d}"
        text = text[:2500]
        if where == 5:
            return "slack", "C1", None, fake_slack.mention(text, channel="C1CHAN", ts=ts)
        if where == 6:
            event = fake_slack.mention(text, channel="C1CHAN", ts=ts, thread_ts=self.slack_thread)
            return "slack", "C1-thread", None, event
        dm_channel = f"D{where - 6}DM"
        return (
            "slack",
            dm_channel,
            None,
            fake_slack.direct_message(text, user=f"U{where}USER", channel=dm_channel, ts=ts),
        )

    async def stream(self) -> None:
        number = 0
        while number < self.args.messages or self.result.kills < self.args.kills:
            number += 1
            platform_name, conversation, payload, event = self._next_message(number)
            text = (payload or {}).get("content") or (event or {}).get("text", "")
            clean = " ".join(
                text.replace(self.mention, " ").replace(f"<@{fake_slack.BOT_USER_ID}>", " ").split()
            )
            self.sent.append(Sent(number, platform_name, conversation, clean, time.monotonic()))
            if payload is not None:
                await self.discord_dispatch(payload)
                if self.rng.random() < 0.1:  # the same MESSAGE_CREATE again
                    await self.discord_dispatch(payload)
            else:
                assert event is not None
                event_id = f"Ev{number:06d}"
                body = fake_slack.event_callback(event, event_id)
                await self.slack_send(event_id, body)
                if self.rng.random() < 0.1:  # Slack re-sends an event it thinks timed out
                    asyncio.get_running_loop().call_later(
                        self.rng.uniform(0.2, 3),
                        lambda b=body, e=event_id: asyncio.ensure_future(
                            self.slack_send(e, b, 1, "http_timeout")
                        ),
                    )
            await asyncio.sleep(self.rng.expovariate(self.args.rate))
        self.result.sent = number
        self.stream_done.set()

    # ---- killing ----

    async def killer(self) -> None:
        first = True
        while not self.stream_done.is_set():
            if not first:
                await self.spawn()
            first = False
            if self.rng.random() < 0.25:  # during start-up
                await asyncio.sleep(self.rng.uniform(0.05, 2.5))
            else:
                await self.wait_connected()
                await asyncio.sleep(self.rng.uniform(0.3, self.args.max_uptime))
            if self.proc is not None and self.proc.returncode is not None:
                self.result.problems.append(f"the bot exited by itself with status {self.proc.returncode}")
                continue
            if self.stream_done.is_set():
                break
            sig = signal.SIGKILL if self.rng.random() < 0.5 else signal.SIGTERM
            await self.kill(sig)
            await asyncio.sleep(self.rng.uniform(0, 0.5))
        # The stream has ended: let the bot finish (restarting it if it was just killed).
        if self.proc is None or self.proc.returncode is not None:
            await self.spawn()
        await self.wait_connected()

    # ---- counting ----

    def _answers(self) -> dict[int, list[str]]:
        """Marker number -> the texts of the bot's answers to it (each split reply as one answer)."""
        answers: dict[int, list[str]] = {}
        last: dict[str, int] = {}  # channel -> number of the answer its last message started
        for message in self.discord.created:
            content = message.get("content", "")
            channel = message.get("channel_id", "")
            if content.startswith("echo: m"):
                number = int(content[7:12])
                answers.setdefault(number, []).append(content)
                last[channel] = number
            elif content.startswith("I'm restarting"):
                self.result.restart_notices += 1
            elif channel in last:  # the second part of a split reply
                answers[last[channel]][-1] += "\n" + content
        for post in self.slack.posted:
            text = post["text"]
            if text.startswith("echo: m"):
                answers.setdefault(int(text[7:12]), []).append(text)
            elif text.startswith("I&#39;m restarting") or text.startswith("I'm restarting"):
                self.result.restart_notices += 1
        return answers

    def _unanswered_count(self) -> int:
        answered = {
            int(m.get("content", "")[7:12])
            for m in self.discord.created
            if m.get("content", "").startswith("echo: m")
        }
        answered |= {int(p["text"][7:12]) for p in self.slack.posted if p["text"].startswith("echo: m")}
        return sum(s.number not in answered for s in self.sent)

    def _all_answered(self) -> bool:
        return self._unanswered_count() == 0

    async def wait_idle(self, quiet: float = 10.0, within: float = 300.0) -> None:
        """Until every message is answered, or nothing new was posted for `quiet` seconds."""
        end = time.monotonic() + within
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < end:
            count = len(self.discord.created) + len(self.slack.posted)
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            if self._all_answered() and time.monotonic() - last_change > 2:
                return
            if time.monotonic() - last_change > quiet:
                return
            await asyncio.sleep(0.2)

    async def count(self) -> None:
        from sqlalchemy import select

        from storage import open_store
        from storage.schema import InboxRow, MessageRow

        answers = self._answers()
        url = self.args.db_url or f"sqlite+aiosqlite:///{self.workdir / 'bot.db'}"
        store = await open_store(url)
        try:
            async with store._sessions() as session:
                rows = (await session.scalars(select(MessageRow).order_by(MessageRow.id))).all()
                inbox = (await session.scalars(select(InboxRow))).all()
        finally:
            await store.close()
        in_inbox = {
            n for n in (_number_in(json.loads(r.message).get("text", ""), "user") for r in inbox) if n
        }
        for sent in self.sent:
            got = answers.get(sent.number, [])
            if len(got) == 1:
                self.result.answered_once += 1
            elif len(got) > 1:
                self.result.answered_twice += 1
                self._problem(f"{_marker(sent.number)} answered {len(got)} times")
            else:
                self.result.never_answered += 1
                self.result.never_reached_the_inbox += sent.number not in in_inbox
                created = [m for m in self.discord.created if _marker(sent.number) in m.get("content", "")]
                posted = [p for p in self.slack.posted if _marker(sent.number) in p.get("text", "")]
                seen = [m.get("content", "")[:30] for m in created] + [p["text"][:30] for p in posted]
                seen += [
                    f"{r.path} {str((r.body or {}).get('content'))[:14]} {(r.body or {}).get('nonce')}"
                    f" cancelled={(r.body or {}).get('cancelled', False)}"
                    for r in self.discord.requests
                    if _marker(sent.number) in json.dumps(r.body or {})
                ]
                self._problem(
                    f"{_marker(sent.number)} ({sent.platform} {sent.conversation}) never answered; {seen}"
                )
        self.result.inbox_states = dict(Counter(r.state for r in inbox))
        by_channel: dict[str, list[Any]] = {}
        for row in rows:
            by_channel.setdefault(row.channel_key, []).append(row)
        seen_rows: Counter[int] = Counter()
        for channel_rows in by_channel.values():
            numbers = []
            for index, row in enumerate(channel_rows):
                number = _number_in(row.text, row.role)
                if number is None:
                    self._disagree(f"a {row.role} row nobody said: {row.text[:40]!r}")
                    continue
                seen_rows[number] += 1
                if row.role == "bot":
                    shown = answers.get(number, [])
                    if len(shown) != 1 or _squash(shown[0]) != _squash(row.text):
                        self._disagree(f"the stored reply to {_marker(number)} is not the one its user saw")
                    before = channel_rows[index - 1] if index else None
                    if before is None or before.role != "user" or _number_in(before.text, "user") != number:
                        self._disagree(f"the stored reply to {_marker(number)} does not follow its question")
                else:
                    numbers.append(number)
                    sent = self.sent[number - 1]
                    if _squash(row.text) != _squash(sent.text):
                        self._disagree(f"the stored turn of {_marker(number)} is not what its user said")
            if numbers != sorted(numbers):
                self.result.out_of_order += 1
                self._problem(f"a conversation's turns are out of order: {numbers[:10]}")
        for sent in self.sent:
            expected = 2 if len(answers.get(sent.number, [])) == 1 else None
            if expected is not None and seen_rows[sent.number] != expected:
                self._disagree(
                    f"{_marker(sent.number)} was answered but has {seen_rows[sent.number]} history rows"
                )

    def _problem(self, text: str) -> None:
        if len(self.result.problems) < 20:
            self.result.problems.append(text)

    def _disagree(self, text: str) -> None:
        self.result.disagreements += 1
        self._problem(text)

    # ---- the run ----

    async def run(self) -> ChaosResult:
        started = time.monotonic()
        await self.discord.start()
        await self.slack.start()
        self.discord.send_delay = self.slack.post_delay = self.args.send_delay
        self.build()
        (self.workdir / "chaos.toml").write_text(self.config_text())
        if self.args.db_url:
            await empty_postgres(self.args.db_url)
        try:
            await self.spawn()
            if not await self.wait_connected(within=120):
                raise RuntimeError(f"the bot did not start; see {self.workdir / 'bot.log'}")
            streaming = asyncio.create_task(self.stream())
            await self.killer()
            await streaming
            await self.wait_idle()
            if self.proc is not None and self.proc.returncode is None:
                self.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(self.proc.wait(), timeout=60)
            await self.count()
        finally:
            if self.proc is not None and self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            await self.discord.close()
            await self.slack.close()
            self._log.close()
        self.result.seconds = round(time.monotonic() - started, 1)
        return self.result


def _number_in(text: str, role: str) -> int | None:
    prefix = "echo: m" if role == "bot" else "m"
    if text.startswith(prefix) and text[len(prefix) : len(prefix) + 5].isdigit():
        return int(text[len(prefix) : len(prefix) + 5])
    return None


def _squash(text: str) -> str:
    return "".join(text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").split())


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )


async def run_chaos(args: argparse.Namespace, workdir: Path | None = None) -> ChaosResult:
    if workdir is not None:
        return await Chaos(args, workdir).run()
    with tempfile.TemporaryDirectory(prefix="dialobot-chaos-") as tmp:
        return await Chaos(args, Path(tmp)).run()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bot.bench.chaos", description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=300, help="messages to send at least (default 300)")
    p.add_argument("--kills", type=int, default=25, help="kills at least (default 25)")
    p.add_argument("--rate", type=float, default=3.0, help="messages per second, on average (default 3)")
    p.add_argument("--think", type=float, default=0.3, help="seconds each reply takes, up to twice (0.3)")
    p.add_argument("--send-delay", type=float, default=0.2, help="each post takes up to this long (0.2 s)")
    p.add_argument(
        "--max-uptime", type=float, default=8.0, help="the bot runs at most this long between kills"
    )
    p.add_argument("--recover-age", type=float, default=600.0, help="inbox.recover_max_age_seconds (600)")
    p.add_argument(
        "--db-url", default="", help="a PostgreSQL URL (emptied first!); default: a new SQLite file"
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", help="keep the bot's log and database in this directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    before = machine()
    workdir = Path(args.keep) if args.keep else None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run_chaos(args, workdir))
    report = {**asdict(result), "machine_at_start": before, "machine_at_end": machine()}
    print(json.dumps(report, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
