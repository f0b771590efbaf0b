"""dialobot: a self-hosted DialoGPT chat bot. The folders are the map (docs/architecture.md):

core/        the engine and what it needs to know: messages, commands, access, admission, protocols
generation/  prompts, the generation thread, batching, and one module per backend
models/      loading, INT8 quantization, saved INT8 directories, the demo model and its training
ops/         the composition root, shutdown, health, metrics server, logs, admin commands, retention
bench/       measurement tools and the load test (optional extra: `.[bench]`)
testing.py   the test harness: a scripted generator, an in-memory outbox, a wired engine
"""

__version__ = "0.2.0"
"""The one place the version is written; pyproject.toml reads it from here."""
