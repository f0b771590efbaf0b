"""The operator's HTTP endpoint (aiohttp): `/healthz` for orchestrators and `/metrics` for Prometheus.

Off by default (`[health] enabled`); it binds to 127.0.0.1 unless configured, because metrics name
platforms and error kinds an outsider need not see. It starts before the model loads, so an orchestrator
sees "model: loading" (503) instead of a refused connection during a slow start.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.config import Config, HealthConfig
from bot.core import metrics
from bot.errors import DialobotError
from bot.ops.readiness import readiness
from bot.ops.storage_health import STORAGE
from storage import HistoryStore

logger = logging.getLogger(__name__)

MODEL = "model"


class OperationsServer:
    """`/healthz` and `/metrics`; with `[health] enabled = false` every method is a no-op."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self.store: HistoryStore | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    def model_loaded(self) -> None:
        readiness.ready(MODEL)

    def attach_store(self, store: HistoryStore) -> None:
        """From now on `/metrics` reports `dialobot_history_rows` from this store; it opened, so it is ready
        (`watch_storage` probes it from then on)."""
        self.store = store
        readiness.ready(STORAGE)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        if not self.config.enabled:
            return
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise DialobotError(
                f"health.port: cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}"
            ) from None
        self.port = self._runner.addresses[0][1]
        logger.info("health and metrics on http://%s:%d/healthz and /metrics", self.config.host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        problems = readiness.problems()
        if problems:
            return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self.store is not None:
            try:
                metrics.HISTORY_ROWS.set(await self.store.total_turns())
            except Exception as exc:  # a scrape must still answer while the database is away
                logger.warning("could not count history rows for /metrics: %s", exc)
                metrics.ERRORS.labels(kind="storage").inc()
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_operations(config: Config, adapters: list[str]) -> OperationsServer:
    """Expect the model and `adapters` to become ready, and start the endpoint if it is enabled."""
    readiness.expect([MODEL, STORAGE, *adapters])
    readiness.not_ready(MODEL, "loading")
    server = OperationsServer(config.health)
    await server.start()
    return server
