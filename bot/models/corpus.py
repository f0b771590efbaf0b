"""Conversations for training and evaluation: `chitchat-dataset`, and the bot's own exported history.

The demo model learns from `chitchat-dataset` (the `demo` extra): 7,168 open-domain conversations between
people, as small talk in a chat room reads. Consecutive messages by the same sender form one turn, so turns
alternate between speakers, as in a DialoGPT prompt. Conversations whose messages all carry one sender id
(about 3,150 of them, a quirk of the data set) have no turns to learn a reply from and are left out.

`dialobot train` also reads the JSON lines that `dialobot history export` writes: one channel's history per
file, split into conversations where nobody wrote for `CONVERSATION_GAP`.

A fixed slice of conversations, chosen by a hash of each conversation's key, is held out of training, so that
quality checks (bits per byte, the reply metrics of `dialobot eval`) run on text the model never saw.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Literal

from bot.errors import DialobotError

Dialog = list[str]
HELDOUT_PERCENT = 5
CONVERSATION_GAP = timedelta(minutes=30)
"""In an exported history, a silence this long ends one conversation and starts the next."""
BOT_ROLE = "bot"


@dataclass(frozen=True, slots=True)
class Conversation:
    """Turns in order (consecutive messages by one author already joined), with who wrote each."""

    key: str
    """Stable identity (the data set's id, or channel and start time): the held-out split hashes it."""
    turns: tuple[str, ...]
    authors: tuple[str, ...]
    learn: tuple[bool, ...] | None = None
    """Per turn, whether training learns to write it; None: every turn. The bot's own replies in an export
    stay in as context but are not learned (the model should learn people, not its earlier self)."""


def join_messages(texts: Iterable[str]) -> str:
    """One turn from several messages in a row: whitespace normalised, a full stop between two messages when
    the first ends in a letter or digit (`hi` + `how are you?` reads `hi. how are you?`)."""
    turn = ""
    for text in texts:
        text = " ".join(str(text).split())
        if not text:
            continue
        if turn and turn[-1].isalnum():
            turn += "."
        turn = f"{turn} {text}" if turn else text
    return turn


def merge_turns(
    messages: Iterable[tuple[str, str]], learnable: Iterable[bool] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[bool, ...]]:
    """(author, text) messages in order -> turns, their authors, and whether each is learned."""
    turns: list[list[str]] = []
    authors: list[str] = []
    learn: list[bool] = []
    flags = iter(learnable) if learnable is not None else None
    for author, text in messages:
        flag = next(flags) if flags is not None else True
        if not " ".join(str(text).split()):
            continue
        if authors and authors[-1] == author:
            turns[-1].append(text)
            learn[-1] = learn[-1] and flag
        else:
            turns.append([text])
            authors.append(author)
            learn.append(flag)
    return tuple(join_messages(t) for t in turns), tuple(authors), tuple(learn)


def load_chitchat(path: str | Path | None = None) -> list[Conversation]:
    """Every conversation of chitchat-dataset (or a file in its format) with at least two turns, by key."""
    if path is None:
        try:
            source = resources.files("chitchat_dataset") / "dataset.json"
            text = source.read_text(encoding="utf-8")
        except ModuleNotFoundError:
            raise DialobotError(
                "the demo model's training data is not installed: pip install 'dialobot[demo]' "
                "(the chitchat-dataset package)"
            ) from None
    else:
        text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        conversations = []
        for key in sorted(data):
            messages = [
                (str(message[0]["sender"]), str(message_part["text"]))
                for message in data[key]["messages"]
                for message_part in message
            ]
            turns, authors, _ = merge_turns(messages)
            if len(turns) >= 2:
                conversations.append(Conversation(str(key), turns, authors))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise DialobotError(f"{path or 'chitchat-dataset'}: not in the chitchat format ({exc!r})") from None
    return conversations


def load_history_export(paths: Sequence[str | Path]) -> list[Conversation]:
    """Conversations from `dialobot history export` files (JSON lines, one record per stored turn)."""
    records: list[dict] = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DialobotError(f"{path}: {exc.strerror or exc}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                record["_time"] = datetime.fromisoformat(record["created_at"])
                record["channel"], record["role"], record["text"]
            except (ValueError, KeyError, TypeError) as exc:
                raise DialobotError(f"{path}:{number}: not a history export line ({exc!r})") from None
            records.append(record)
    by_channel: dict[str, list[dict]] = {}
    for record in records:
        by_channel.setdefault(str(record["channel"]), []).append(record)
    conversations = []
    for channel in sorted(by_channel):
        rows = sorted(by_channel[channel], key=lambda r: r["_time"])
        start = 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or rows[end]["_time"] - rows[end - 1]["_time"] > CONVERSATION_GAP:
                part = rows[start:end]
                turns, authors, learn = merge_turns(
                    ((_author(r), str(r["text"])) for r in part), (r["role"] != BOT_ROLE for r in part)
                )
                if len(turns) >= 2:
                    key = f"{channel}@{part[0]['_time'].isoformat()}"
                    conversations.append(Conversation(key, turns, authors, learn))
                start = end
    return conversations


def _author(record: dict) -> str:
    if record["role"] == BOT_ROLE:
        return BOT_ROLE
    return f"user:{record.get('author_id') or 'unknown'}"


def is_heldout(key: str, percent: int = HELDOUT_PERCENT) -> bool:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent


def split_conversations(
    conversations: Sequence[Conversation], part: Literal["train", "heldout"], percent: int = HELDOUT_PERCENT
) -> list[Conversation]:
    """The training part or the held-out part (about `percent`%, chosen by a hash of each key)."""
    want_heldout = part == "heldout"
    return [c for c in conversations if is_heldout(c.key, percent) == want_heldout]


def split_at_least_one(
    conversations: Sequence[Conversation], percent: int = 10
) -> tuple[list[Conversation], list[Conversation]]:
    """Train and held-out parts of a small collection (someone's exported chats): about `percent`% held out by
    hash, but at least one conversation whenever there are two or more, and never all of them."""
    train = split_conversations(conversations, "train", percent)
    heldout = split_conversations(conversations, "heldout", percent)
    if len(conversations) >= 2 and not heldout:
        pick = min(train, key=lambda c: hashlib.sha256(c.key.encode()).digest())
        train.remove(pick)
        heldout = [pick]
    elif heldout and not train:
        train, heldout = heldout[1:], heldout[:1]
    return train, heldout


def training_turns(conversations: Iterable[Conversation]) -> Iterable[str]:
    for conversation in conversations:
        yield from conversation.turns
