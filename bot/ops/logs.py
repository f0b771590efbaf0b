"""Logging set-up: readable lines or JSON lines (`[logging] format`), with every secret blotted out.

Secrets come from environment variables named by the config's `*_env` keys. Those values (and the password
inside a database URL) are replaced by `***` in every record, whichever library logged it and whether it is
in the message, its arguments or a traceback: a token must never reach a log file, even at DEBUG.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.config import Config

logger = logging.getLogger(__name__)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
REDACTED = "***"
MIN_SECRET_LENGTH = 4  # shorter values would blot out ordinary words


def secret_values(config: Config) -> list[str]:
    """The values of every environment variable a `*_env` key names, and any password in a database URL."""
    secrets: set[str] = set()
    for section_name, section in config.model_dump().items():
        for key, name in section.items():
            if not (key.endswith("_env") and name and (value := os.environ.get(name))):
                continue
            if (section_name, key) != ("storage", "url_env"):
                secrets.add(value)  # a token or signing secret
                continue
            try:
                password = make_url(value).password
            except (ArgumentError, ValueError):
                password = value  # not a URL we can read: keep all of it out of the logs
            if password:  # a database URL with a password: blot out the password, and the URL whole
                secrets.update((value, str(password)))
    # Longest first, so that a secret containing another is blotted out whole.
    return sorted((s for s in secrets if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)


class SecretRedactor(logging.Filter):
    """Replaces known secret values in a record's final text, arguments and traceback included."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info:
            record.exc_text = self._redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


def _through_our_handler(library: str) -> None:
    """Drop the stderr handler `library` adds to its logger on import: its records reach the root handler
    anyway, so each would be printed twice, the second time unformatted and unredacted. (transformers, which
    stops its records at its own handler, is routed when a model loads: `quiet_transformers`.)"""
    importlib.import_module(f"{library}.utils.logging")  # adds the handler, once; cheap, unlike the library
    library_logger = logging.getLogger(library)
    for stray in list(library_logger.handlers):
        library_logger.removeHandler(stray)
    library_logger.propagate = True


def setup_logging(level: str, config: Config) -> None:
    """Log to stderr at `level` in the configured format, with the config's secrets redacted."""
    handler = logging.StreamHandler(sys.stderr)
    if config.logging.format == "json":
        formatter: logging.Formatter = JsonFormatter(
            JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}
        )
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(SecretRedactor(secret_values(config)))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    _through_our_handler("huggingface_hub")
    # Alembic announces each of its plugins at INFO on every start: noise before any real line.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
