"""Operator commands: `dialobot db upgrade|status`, `dialobot history export|reset`, `dialobot healthcheck`.

They act on the same database the bot uses (the config's `[storage]`), through the same interfaces: schema
revisions through `storage.schema_version`, history through the `HistoryStore` protocol. They load no model,
so they are quick to run next to (or instead of) a running bot, e.g. in `docker compose run`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Callable

from bot.config import Config
from bot.errors import DialobotError

logger = logging.getLogger(__name__)

ADMIN_COMMANDS = ("db", "history", "healthcheck")
HEALTHCHECK_TIMEOUT_SECONDS = 5.0


def add_admin_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the operator commands with the CLI's `add(name, help, model_flags)` helper."""
    db = add("db", "database schema: `upgrade` applies the migrations, `status` shows the revision", False)
    db.add_argument("action", choices=["upgrade", "status"])
    history = add("history", "export a conversation's history as JSON lines, or delete it", False)
    history.add_argument("action", choices=["export", "reset"])
    history.add_argument("--channel", required=True, metavar="KEY", help="e.g. discord:<guild>:<channel>")
    history.add_argument("--yes", action="store_true", help="reset without asking (required when not a tty)")
    add(
        "healthcheck", "exit 0 if the running bot's /healthz answers 200 (the container's HEALTHCHECK)", False
    )


def run_admin_command(args: argparse.Namespace, config: Config) -> int:
    """Run one of ADMIN_COMMANDS; return the exit status."""
    if args.command == "healthcheck":
        return healthcheck(config)
    if args.command == "db":
        return asyncio.run(_db(args.action, config))
    return asyncio.run(_history(args, config))


async def _db(action: str, config: Config) -> int:
    from storage.history_store import connect, storage_errors
    from storage.schema_version import SchemaStatus, schema_state, upgrade

    url, setting = config.storage.resolve_url(), config.storage.setting()
    engine = await connect(url, setting)
    try:
        async with storage_errors(url, setting):
            if action == "status":
                state = await schema_state(engine)
                print(state.describe())
                return 0 if state.status in (SchemaStatus.CURRENT, SchemaStatus.EMPTY) else 1
            before, after = await upgrade(engine)
    finally:
        await engine.dispose()
    if before.current == after.current and before.stamped:
        print(f"database schema is already at revision {after.current}; nothing to do")
    else:
        print(f"upgraded the database schema from revision {before.current or 'none'} to {after.current}")
    return 0


async def _history(args: argparse.Namespace, config: Config) -> int:
    from storage import AuditRecord, open_store
    from storage.history_store import storage_errors

    if args.action == "reset" and not args.yes and not _confirmed(args.channel):
        raise DialobotError(
            f"history reset: not confirmed; nothing deleted (pass --yes to reset {args.channel})"
        )
    url, setting = config.storage.resolve_url(), config.storage.setting()
    store = await open_store(url, setting)
    try:
        async with storage_errors(url, setting):
            if args.action == "reset":
                # An operator's reset is an admin action like the chat command's: it goes in the audit log.
                audit = AuditRecord(f"cli:{getpass.getuser()}", "reset", args.channel)
                deleted = await store.reset_channel(args.channel, audit=audit)
                print(f"deleted {deleted} turns of {args.channel}")
                return 0
            turns = await store.recent_turns(args.channel, await store.count_turns(args.channel))
    finally:
        await store.close()
    for turn in turns:
        record = {
            "channel": args.channel,
            "role": turn.role.value,
            "author_id": turn.author_id,
            "text": turn.text,
            "created_at": turn.created_at.isoformat(),
        }
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    return 0


def _confirmed(channel: str) -> bool:
    """Ask on a terminal; anywhere else (a script, a pipe) a reset needs --yes."""
    if not sys.stdin.isatty():
        return False
    answer = input(f"Delete the whole history of {channel}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def healthcheck(config: Config) -> int:
    """GET the health server's /healthz; print its answer; 0 if it is 200, 1 otherwise."""
    if not config.health.enabled:
        raise DialobotError("healthcheck: health.enabled is false in this config; there is nothing to ask")
    host = "127.0.0.1" if config.health.host in ("0.0.0.0", "::", "") else config.health.host
    url = f"http://{host}:{config.health.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=HEALTHCHECK_TIMEOUT_SECONDS) as response:
            print(response.read().decode().strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode().strip())
    except (urllib.error.URLError, OSError) as exc:
        print(f"no answer from {url}: {getattr(exc, 'reason', exc)}")
    return 1
