"""What the core knows of the model: a `Generator` that answers turns, and the facts `status` reports.

The core never imports a runtime: implementations (`bot.generation.backends`) import this module, and the
composition root (`bot.ops.app`) hands one to the engine. How a conversation becomes the model's turns is the
model family's rule, so it is injected too (`TurnRule`), not written into the engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Protocol

from storage.types import StoredTurn


@dataclass(frozen=True, slots=True)
class ProjectionCounts:
    """How many linear projections a model has, and how many of them run in INT8."""

    int8: int
    total: int


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What `status` and `model-info` report about the running model."""

    name: str
    source: str
    quantization: str
    """`int8`, `none` (FP32), or `remote` (the server decides)."""
    backend: str
    parameters: int | None
    """None when the backend does not tell (a remote server)."""
    context: int
    projections: ProjectionCounts | None
    """How many linear projections run in INT8; None when the backend does not tell."""
    runtime: str = ""
    """How the backend runs the model when it has more to say (runtime version, batching): `model-info`."""

    @property
    def public_name(self) -> str:
        """The name to show chat users: a hub id as it is, a model directory by its last part only, so that
        `status` never tells anyone where the model lives on the server's disk."""
        name = self.name.rstrip("/\\") or self.name
        if "\\" in name:  # a Windows path
            return PureWindowsPath(name).name or name
        if name.startswith(("/", "~", ".")) or os.path.isdir(os.path.expanduser(name)):
            return PurePosixPath(name).name or name
        return name

    @property
    def quantization_label(self) -> str:
        return {"int8": "INT8", "none": "FP32"}.get(self.quantization, self.quantization)

    def details(self) -> list[str]:
        """What is known about the model's size and quantization, as short phrases."""
        parts = [self.quantization_label]
        if self.projections is not None:
            parts.append(f"{self.projections.int8}/{self.projections.total} projections INT8")
        if self.parameters is not None:
            parts.append(f"{self.parameters / 1e6:.1f}M parameters")
        return parts

    def summary(self) -> str:
        return f"{self.name} ({', '.join(self.details())}, backend {self.backend})"


class Generator(Protocol):
    """Answers a conversation; runs off the event loop, so `generate` never blocks it."""

    info: ModelInfo

    async def generate(self, turns: Sequence[str]) -> str:
        """The model's next turn after `turns` (oldest first; the last is the message to answer)."""
        ...

    async def close(self) -> None: ...


TurnRule = Callable[[Sequence[StoredTurn], str], list[str]]
"""Turns a channel's stored history and the new message into the turns the model is given."""


def plain_turns(history: Sequence[StoredTurn], text: str) -> list[str]:
    """Every stored turn as it is, then `text`: for models with no rule of their own."""
    return [turn.text for turn in history] + [text]
