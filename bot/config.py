"""The one typed configuration object, loaded once from TOML; secrets are read from environment variables.

Every key has a default, so the bot runs with no file at all (console chat, SQLite). Unknown keys are errors:
a typo should stop start-up, not be silently ignored. Any error becomes one line naming the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.errors import ConfigError

DEMO_MODEL = "demo"
DEFAULT_MODEL = "microsoft/DialoGPT-medium"


def secret_from_env(key: str, env_name: str, required: bool = True) -> str:
    """The secret in the environment variable `env_name`, which config key `key` (e.g. `slack.bot_token_env`)
    names; a missing one is a `ConfigError` naming both, never the value."""
    value = os.environ.get(env_name, "")
    if not value and required:
        raise ConfigError(f"{key}: environment variable {env_name} is not set")
    return value


def data_dir() -> Path:
    """Where history lives by default: `$DIALOBOT_DATA_DIR`, else the XDG data directory."""
    if env := os.environ.get("DIALOBOT_DATA_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "dialobot"


def cache_dir() -> Path:
    """Where built models (the demo model) are cached: `$DIALOBOT_CACHE_DIR`, else the XDG cache directory."""
    if env := os.environ.get("DIALOBOT_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dialobot"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    name: str = Field(DEFAULT_MODEL, min_length=1)
    """A Hugging Face model id, a local model directory, or `demo` (built locally on first use)."""
    quantization: Literal["int8", "none"] = "int8"
    threads: Annotated[int, Field(ge=0)] = 0
    """Generation threads (torch, CTranslate2 or OpenVINO); 0 keeps the runtime's default (one per core)."""
    backend: Literal["torch", "ipex", "ctranslate2", "openvino", "openai", "scripted"] = "ctranslate2"
    """What runs the model: ctranslate2 (the default, measured fastest: docs/benchmarks.md), torch (FP32/INT8
    here; the reference, and the only one that loads a `dialobot quantize` directory), ipex (Intel Extension
    for PyTorch), openvino (openvino-genai, continuous batching), or openai (a remote OpenAI-compatible server
    such as vLLM; `name` then only picks the tokenizer). `scripted` is the test harness's echo
    (`bot.testing.ScriptedGenerator`), not a model: the crash test (`python -m bot.bench.chaos`) runs the real
    bot with it; `$DIALOBOT_SCRIPTED_DELAY_SECONDS` sets how long each reply "thinks"."""


class GenerationConfig(_Section):
    max_new_tokens: Annotated[int, Field(ge=1, le=512)] = 64
    do_sample: bool = True
    top_k: Annotated[int, Field(ge=0)] = 50
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    temperature: Annotated[float, Field(gt=0)] = 0.8
    no_repeat_ngram_size: Annotated[int, Field(ge=0)] = 3
    repetition_penalty: Annotated[float, Field(ge=1)] = 1.1
    fallback_reply: str = Field("Hmm, I'm not sure what to say to that.", min_length=1)
    """Sent when the model twice produces an empty reply: the bot never sends an empty message."""
    timeout_seconds: Annotated[float, Field(ge=0)] = 120.0
    """A reply not generated within this many seconds is given up (the user gets an apology); 0: no limit."""


class HistoryConfig(_Section):
    max_turns: Annotated[int, Field(ge=0, le=1000)] = 10
    """Most recent stored turns (user and bot messages) in the prompt; fewer if they exceed the context."""


class StorageConfig(_Section):
    path: str = ""
    """SQLite file; empty means `dialobot.db` in the data directory (`$DIALOBOT_DATA_DIR`)."""
    url_env: str = ""
    """Name of an environment variable holding a SQLAlchemy async URL; overrides `path` when set."""

    check_seconds: Annotated[float, Field(gt=0)] = 5.0
    """How often the running bot checks that the database can be read and written (`/healthz`)."""

    def setting(self) -> str:
        """The config key naming the database, for one-line errors: `storage.path` or `storage.url_env`."""
        if self.url_env:
            return f"storage.url_env (${self.url_env})"
        return "storage.path" if self.path else f"storage.path (default {data_dir() / 'dialobot.db'})"

    def resolve_url(self) -> str:
        """The async SQLAlchemy URL to connect to."""
        if self.url_env:
            return secret_from_env("storage.url_env", self.url_env)
        path = Path(self.path).expanduser() if self.path else data_dir() / "dialobot.db"
        return f"sqlite+aiosqlite:///{path}"


class ConsoleConfig(_Section):
    enabled: bool = True
    name: str = Field("local", min_length=1, pattern=r"^[^\s:]+$")
    """The conversation's name: history is kept under `console:<name>`."""


class DiscordConfig(_Section):
    enabled: bool = False
    token_env: str = "DISCORD_BOT_TOKEN"
    admin_user_ids: list[str] = []
    """Operators: Discord user ids that administer all of Discord, DMs included (admin scope `discord`);
    members with Manage Server or Administrator administer their own server only."""
    always_answer_channel_ids: list[str] = []
    """Channels where the bot answers every message, no mention needed."""
    answer_bots: bool = False
    command_guild_id: str = ""
    """Sync slash commands to this guild only (instant, for testing); empty syncs them globally."""
    shard_count: Annotated[int, Field(ge=1)] | None = None
    shard_ids: list[int] | None = None
    api_url: str = Field("https://discord.com/api/v10", pattern=r"^https?://")
    """Discord's REST API base URL (the gateway URL comes from it): a local fake in tests."""


class SlackConfig(_Section):
    enabled: bool = False
    mode: Literal["socket", "http"] = "socket"
    bot_token_env: str = "SLACK_BOT_TOKEN"
    app_token_env: str = "SLACK_APP_TOKEN"
    signing_secret_env: str = "SLACK_SIGNING_SECRET"
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=1, le=65535)] = 3000
    admin_user_ids: list[str] = []
    """Operators: Slack user ids that administer every workspace (admin scope `slack`); workspace admins and
    owners administer their own workspace only."""
    always_thread: bool = False
    """In channels, answer in a thread under the user's message even when they wrote at the top level."""
    thread_is_conversation: bool = True
    """A thread is its own conversation (`slack:<team>:<channel>:<thread_ts>`); false: the channel's."""
    api_url: str = Field("https://slack.com/api/", pattern=r"^https?://")
    """The Web API base URL: `https://slack-gov.com/api/` for GovSlack, or a local fake in tests."""


class LimitsConfig(_Section):
    """Back-pressure and flood control: what the bot accepts before it says "busy" or "wait"."""

    max_pending: Annotated[int, Field(ge=1)] = 256
    """Chat messages waiting for or in generation, all channels together; beyond it: "busy, try again"."""
    max_pending_per_channel: Annotated[int, Field(ge=1)] = 16
    """The same bound for one conversation, so that one flooded channel cannot starve the others."""
    user_cooldown_seconds: Annotated[int, Field(ge=0)] = 0
    """Minimum time between two chat messages of one user (per platform); 0: off."""
    channel_rate: str = ""
    """Chat messages a conversation may send, e.g. "20/minute" or "5 per 10 seconds"; empty: off."""
    max_message_chars: Annotated[int, Field(ge=1)] = 2000
    """Longer messages are cut to this many characters before the model sees them, with a notice."""

    @field_validator("channel_rate")
    @classmethod
    def _rate_parses(cls, value: str) -> str:
        if value:
            from limits import parse

            try:
                parse(value)
            except ValueError:
                raise ValueError('expected a rate such as "20/minute" or "5 per 10 seconds"') from None
        return value


class AccessConfig(_Section):
    """Who and where the bot answers, and how long it keeps what was said."""

    allow_channels: list[str] = []
    """Conversation keys (or prefixes, e.g. `discord:<guild>`) the bot answers in; empty: everywhere."""
    deny_channels: list[str] = []
    """Conversation keys (or prefixes) the bot never answers in, even when allowed above."""
    deny_users: list[str] = []
    """Users the bot ignores, as `<platform>:<user id>`, e.g. `discord:80351110224678912`."""
    retention_days: Annotated[float, Field(ge=0)] = 0.0
    """Stored turns older than this are deleted (checked every `retention_check_minutes`); 0: kept forever."""
    retention_check_minutes: Annotated[float, Field(gt=0)] = 60.0


class ShutdownConfig(_Section):
    deadline_seconds: Annotated[float, Field(ge=0)] = 30.0
    """On SIGTERM or Ctrl-C, answers in progress get this long to finish before they are cancelled."""


class InboxConfig(_Section):
    """Every message the bot takes on is written down first, and answered after a restart if it wasn't."""

    recover_max_age_seconds: Annotated[float, Field(ge=0)] = 300.0
    """At start-up, messages taken on but never answered (a crash, a cancelled shutdown) are answered if
    they arrived less than this long ago; older ones are marked expired and logged. 0: none are answered."""
    keep_days: Annotated[float, Field(gt=0)] = 7.0
    """Rows of messages answered (or given up) are deleted this long after they arrived, checked every
    `access.retention_check_minutes`: they only serve to refuse a message delivered twice and to guide the
    Discord read-back after a restart, both within minutes. Stored history is `access.retention_days`."""

    @model_validator(mode="after")
    def _kept_longer_than_recovered(self) -> InboxConfig:
        if self.keep_days * 86400 <= self.recover_max_age_seconds:
            raise ValueError(
                f"inbox.keep_days ({self.keep_days:g} days) must be longer than "
                f"inbox.recover_max_age_seconds ({self.recover_max_age_seconds:g} s): a message read back "
                "after a restart must still find its row, or it is answered twice"
            )
        return self


class OpenAIConfig(_Section):
    """The `openai` backend: an OpenAI-compatible completions server (vLLM, TGI, llama.cpp server)."""

    base_url: str = Field("http://127.0.0.1:8000/v1", pattern=r"^https?://")
    model: str = ""
    """The model name the server serves; empty: the same as `model.name`."""
    api_key_env: str = ""
    """Name of an environment variable holding the API key; empty: no key (vLLM without --api-key)."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    """One request's limit; a request that times out is retried like a 5xx."""
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    """Retries with exponential backoff after a timeout, a dropped connection, a 429 or a 5xx."""
    prompt_format: Literal["auto", "tokens", "text"] = "auto"
    """`tokens`: the prompt as token ids, exactly as built here (vLLM, llama.cpp's `llama-server`); `text`: as
    a string, special-token text in messages defused (llama-cpp-python's server, which answers token ids
    with HTTP 500); `auto`: token ids until the server refuses them, then text (logged once)."""
    context: Annotated[int, Field(ge=0)] = 0
    """The served model's context in tokens; 0: read it from the model's config (`n_positions`)."""

    def api_key(self) -> str:
        """The key from `api_key_env`; a placeholder when none is configured (the SDK insists on one)."""
        if not self.api_key_env:
            return "unused"
        return secret_from_env("openai.api_key_env", self.api_key_env)


class BatchingConfig(_Section):
    """Replies for different channels generated together: one padded batch uses the CPU far better."""

    enabled: bool = True
    max_batch_size: Annotated[int, Field(ge=1, le=64)] = 8
    """At most this many replies are generated in one batch."""
    window_ms: Annotated[float, Field(ge=0, le=1000)] = 20.0
    """How long the first waiting request waits for others to join its batch; 0: start at once."""


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    """`json`: one JSON object per line (time, level, logger, message) for log collectors."""


class HealthConfig(_Section):
    """The operator's HTTP endpoint: `/healthz` for orchestrators, `/metrics` for Prometheus."""

    enabled: bool = False
    host: str = Field("127.0.0.1", min_length=1)
    """Address to listen on; 127.0.0.1 keeps it on this machine (the container image sets 0.0.0.0)."""
    port: Annotated[int, Field(ge=1, le=65535)] = 9464


class SafetyConfig(_Section):
    """What the bot may say, and what it answers (README "Safety filter")."""

    classifier: Literal["profanity_check", "detoxify", "none"] = "profanity_check"
    """Scores each reply 0-1: `profanity_check` (offline, extra `safety`, installed by `make setup`),
    `detoxify` (transformers, extra `detoxify`, weights downloaded on first use) or `none`."""
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.8
    """A reply scoring at least this is not sent; lower is stricter; 1 turns the classifier off."""
    channel_thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    """Per conversation: a key or prefix (like `access.allow_channels`) -> its threshold; the longest wins."""
    blocklist: list[str] = []
    """Words or phrases never sent, matched as whole words after normalization; `word*` for a stem,
    `re:<regex>` for a pattern."""
    regenerations: Annotated[int, Field(ge=0, le=10)] = 2
    """A flagged reply is generated again (a fresh sample) up to this many times, then `fallback_reply`."""
    fallback_reply: str = Field("Let's talk about something else.", min_length=1)
    check_input: bool = False
    """Check incoming messages too: a flagged one is not answered by the model nor kept as context."""
    input_action: Literal["reply", "ignore"] = "reply"
    input_reply: str = Field("I'd rather not answer that. Let's keep it friendly.", min_length=1)
    log_text: bool = False
    """Put the flagged text in the log and the audit log; off: only where, when and why."""
    detoxify_model: Literal["original", "unbiased", "multilingual", "original-small", "unbiased-small"] = (
        "original"
    )
    detoxify_checkpoint: str = ""
    """A local Detoxify checkpoint (`.ckpt`) instead of downloading one."""
    detoxify_config_dir: str = ""
    """A local directory with the checkpoint's Hugging Face config and tokenizer, for machines offline."""

    @field_validator("blocklist")
    @classmethod
    def _patterns_compile(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if entry.strip().startswith("re:"):
                try:
                    re.compile(entry.strip()[3:])
                except re.error as exc:
                    raise ValueError(f"{entry!r} is not a valid regular expression: {exc}") from None
        return entries


class Config(_Section):
    model: ModelConfig = ModelConfig()
    generation: GenerationConfig = GenerationConfig()
    history: HistoryConfig = HistoryConfig()
    storage: StorageConfig = StorageConfig()
    console: ConsoleConfig = ConsoleConfig()
    discord: DiscordConfig = DiscordConfig()
    slack: SlackConfig = SlackConfig()
    limits: LimitsConfig = LimitsConfig()
    access: AccessConfig = AccessConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    inbox: InboxConfig = InboxConfig()
    batching: BatchingConfig = BatchingConfig()
    openai: OpenAIConfig = OpenAIConfig()
    logging: LoggingConfig = LoggingConfig()
    health: HealthConfig = HealthConfig()
    safety: SafetyConfig = SafetyConfig()

    @model_validator(mode="after")
    def _remote_retries_fit_the_reply_timeout(self) -> Config:
        """The engine gives up on a reply after `generation.timeout_seconds`; retries that cannot finish
        before that would turn "the model server is down" into "that took too long", so they are refused."""
        remote, limit = self.openai, self.generation.timeout_seconds
        if self.model.backend != "openai" or not limit:
            return self
        attempts = remote.max_retries + 1
        # The openai client's backoff: 0.5 s doubling per retry, at most 8 s each.
        worst = attempts * remote.timeout_seconds + sum(
            min(0.5 * 2**i, 8.0) for i in range(remote.max_retries)
        )
        if worst > limit:
            raise ValueError(
                f"openai: {attempts} attempts of up to {remote.timeout_seconds:g} s "
                f"(openai.max_retries + 1 x openai.timeout_seconds, plus backoff) can take {worst:g} s, "
                f"more than generation.timeout_seconds ({limit:g}); lower them or raise "
                "generation.timeout_seconds"
            )
        return self


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        if not item["loc"]:  # a check across sections: its message names the keys
            parts.append(item["msg"].removeprefix("Value error, "))
        elif item["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
        else:
            parts.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(parts)


def parse_config(data: dict, source: str = "config") -> Config:
    """Validate a config mapping; raise `ConfigError` with one line naming each bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load the TOML file at `path` (or `$DIALOBOT_CONFIG`); with neither, the embedded defaults."""
    path = path or os.environ.get("DIALOBOT_CONFIG")
    if not path:
        return Config()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    return parse_config(data, source=str(path))


def override(config: Config, section: str, **values) -> Config:
    """A copy of `config` with some keys of one section replaced (for CLI flags), validated again."""
    data = config.model_dump()
    data[section].update({k: v for k, v in values.items() if v is not None})
    return parse_config(data, source="command line")
