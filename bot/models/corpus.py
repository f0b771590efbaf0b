"""Conversations for training: the English dialogs shipped in the `chatterbot-corpus` package.

Each conversation is a list of turns. A fixed, hash-chosen slice is held out of training so that later quality
checks (perplexity, FP32 vs INT8 agreement) run on text the model never saw.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Literal

import yaml

Dialog = list[str]
HELDOUT_PERCENT = 10


def _is_heldout(dialog: Dialog) -> bool:
    digest = hashlib.sha256("\x1e".join(dialog).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELDOUT_PERCENT


def load_chatterbot_english() -> list[Dialog]:
    """Every English conversation of chatterbot-corpus, in a stable order, duplicates removed."""
    root = resources.files("chatterbot_corpus") / "data" / "english"
    dialogs: list[Dialog] = []
    seen: set[tuple[str, ...]] = set()
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yml"):
            continue
        data = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            turns = tuple(" ".join(str(t).split()) for t in conversation if t is not None and str(t).strip())
            if len(turns) >= 2 and turns not in seen:
                seen.add(turns)
                dialogs.append(list(turns))
    return dialogs


def split_dialogs(dialogs: list[Dialog], part: Literal["train", "heldout"]) -> list[Dialog]:
    """The training part or the held-out part of `dialogs` (about 10%, chosen by a hash of each dialog)."""
    want_heldout = part == "heldout"
    return [d for d in dialogs if _is_heldout(d) == want_heldout]
