"""The `dialobot` command line: `chat`, `run`, `model-info`, `quantize`, `bench`, `eval`, `train`, admin.

Errors the user can fix (bad config, a model that cannot be loaded) end the program with one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading

from bot.config import DEMO_MODEL, Config, load_config, override
from bot.errors import DialobotError
from bot.ops.admin_cli import ADMIN_COMMANDS, add_admin_commands, run_admin_command

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dialobot", description="A self-hosted DialoGPT chat bot.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, model_flags: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--config", help="TOML config file (default: $DIALOBOT_CONFIG, else built-in defaults)"
        )
        p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
        if model_flags:
            p.add_argument("--model", help=f"Hugging Face model id, local model directory, or '{DEMO_MODEL}'")
            p.add_argument("--quantization", choices=["int8", "none"])
            p.add_argument(
                "--backend",
                choices=["torch", "ipex", "ctranslate2", "openvino", "openai"],
                help="what runs the model (default: model.backend, ctranslate2)",
            )
        return p

    add("chat", "chat with the bot in this terminal (or through a pipe)")
    add("run", "start every adapter the config enables")
    add("model-info", "load the model and print its size and quantization")
    add_admin_commands(add)
    quantize = add("quantize", "save the model quantized to INT8, to load fast with --model DIR")
    quantize.add_argument("--out", required=True, help="directory to write (must not exist or be empty)")
    bench = add("bench", "measure speed, batching, memory and start-up (see docs/benchmarks.md)", False)
    from bot.bench.cli import add_bench_arguments

    add_bench_arguments(bench)
    evaluate = add(
        "eval",
        "reply quality on held-out conversations: DialoGPT's metrics, FP32 and INT8 (docs/benchmarks.md)",
        False,
    )
    from bot.bench.eval_cli import add_eval_arguments

    add_eval_arguments(evaluate)
    train = add("train", "fine-tune a model on exported conversations into a new model directory", False)
    from bot.models.finetune import add_train_arguments

    add_train_arguments(train)
    return parser


def _setup_logging(level: str, config: Config) -> None:
    from bot.ops.logs import setup_logging

    setup_logging(level, config)


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    # These have no model flags of their own (their --model names the model to measure or train from).
    if args.command in ("bench", "eval", "train"):
        return config
    return override(
        config,
        "model",
        name=getattr(args, "model", None),
        quantization=getattr(args, "quantization", None),
        backend=getattr(args, "backend", None),
    )


def _model_info(config: Config) -> None:
    from bot.generation.backends import load_backend

    generator = load_backend(config)
    info = generator.info

    async def probe_and_close() -> str | None:  # one event loop for both: the HTTP client lives on it
        try:
            return await generator.probe() if hasattr(generator, "probe") else None
        finally:
            await generator.close()

    server = asyncio.run(probe_and_close())
    print(f"model:        {info.name}")
    print(f"source:       {info.source}")
    print(f"backend:      {info.backend}")
    if info.parameters is not None:
        print(f"parameters:   {info.parameters:,}")
    print(f"context:      {info.context} tokens")
    print(f"quantization: {info.quantization}")
    if info.projections is not None:
        print(f"projections:  {info.projections.int8}/{info.projections.total} INT8")
    if info.runtime:
        print(f"runtime:      {info.runtime}")
    if server is not None:
        print(f"server:       {server}")


def _quantize(config: Config, out: str) -> None:
    from bot.models.loader import load_model
    from bot.models.prequantized import save_prequantized

    # What it saves is the torch backend's INT8 model, whatever backend the config serves with.
    loaded = load_model(override(config, "model", quantization="int8", backend="torch").model)
    path = save_prequantized(loaded.model, loaded.tokenizer, loaded.info.parameters, out)
    print(f"saved {loaded.info.summary()} to {path}; use it with --model {path}")


def run_train_command(args: argparse.Namespace) -> int:
    from bot.models.finetune import run_train

    return run_train(args)


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    if any(thread.name == "load-model" and thread.is_alive() for thread in threading.enumerate()):
        # Stopped while the model was loading: torch's threads cannot be interrupted, and tearing down the
        # interpreter under them aborts the process. Nothing is open any more, so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _config(args)
        if args.verbose:
            level = "DEBUG"
        elif args.command == "run":
            level = config.logging.level
        else:  # In a terminal chat, only problems should interrupt the conversation.
            level = "WARNING"
        _setup_logging(level, config)
        if args.command in ADMIN_COMMANDS:
            return run_admin_command(args, config)
        if args.command == "model-info":
            _model_info(config)
        elif args.command == "quantize":
            _quantize(config, args.out)
        elif args.command == "bench":
            from bot.bench.cli import run_bench

            run_bench(args)
        elif args.command == "eval":
            from bot.bench.eval_cli import run_eval

            run_eval(args, config)
        elif args.command == "train":
            return run_train_command(args)
        elif args.command == "chat":
            from bot.ops.app import serve

            asyncio.run(serve(config, ["console"]))
        else:
            from adapters import enabled_adapters
            from bot.ops.app import serve

            asyncio.run(serve(config, enabled_adapters(config)))
    except DialobotError as exc:
        print(f"dialobot: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:  # SIGTERM: a requested, clean stop
        return 0
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            print(file=sys.stderr)
        return 130
    return 0
