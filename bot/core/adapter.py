"""The contract every platform adapter keeps, so the core can run any of them the same way.

An adapter is a thin translator: platform event -> `IncomingMessage` -> `engine.handle(msg, send)` -> the
platform's reply. It owns its connection and nothing else: no history, no model, no command logic. Each
adapter module exposes `create(engine, config) -> Adapter`; the composition root starts the enabled ones.

Readiness: an adapter reports `readiness.ready(<name>)` once it receives messages and
`readiness.not_ready(<name>, reason)` when its connection drops, which `/healthz` shows. The shared
behavioural suite (tests/adapters/test_contract.py) runs against every adapter's fake platform; a new
platform is added by making it pass.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Adapter(Protocol):
    name: str
    """The platform: the first part of its conversation keys, and its name in readiness and metrics."""

    async def run(self) -> None:
        """Connect and answer until the platform connection ends (the console: end of input) or `stop`.

        Bad credentials or settings end it at once with a one-line `DialobotError`.
        """
        ...

    async def stop(self) -> None:
        """Stop receiving; answers in progress finish or are cancelled; then disconnect. Idempotent."""
        ...
