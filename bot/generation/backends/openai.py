"""The `openai` backend: replies from a remote OpenAI-compatible completions server (vLLM, llama.cpp server).

The prompt is built here, exactly as for the in-process backends (`bot.generation.prompt`), so only the
model's tokenizer is needed locally. It goes as token ids where the server takes them (vLLM, llama.cpp's
`llama-server`) and as text where it does not (llama-cpp-python's server declares `prompt: str | list[str]`
and answers ids with HTTP 500): `prompt_format = "auto"` tries ids until a request succeeds, and falls back
to text once if the server refuses them. Sampling fields go under both names servers use
(`repetition_penalty` for vLLM, `repeat_penalty` for llama.cpp); unknown fields are ignored by both.

The official SDK does the timeouts and the retries with exponential backoff (timeouts, dropped connections,
408/409/429/5xx, honouring Retry-After); whatever still fails, and any reply that is not a completion,
becomes `GenerationUnavailable` (with the server's own error message): the engine apologizes and keeps the
user's turn, and the bot carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import openai
from openai import AsyncOpenAI
from transformers import PreTrainedTokenizerBase

from bot.config import Config, GenerationConfig, OpenAIConfig
from bot.core.generator import ModelInfo
from bot.errors import GenerationUnavailable, first_line
from bot.generation.prompt import PromptBuilder
from bot.models.loader import load_tokenizer

logger = logging.getLogger(__name__)

ZERO_WIDTH_JOINER = "\u200d"
REPLACEMENT_CHARACTER = "\ufffd"
PROBE_TIMEOUT_SECONDS = 5.0
REFUSED_FORMAT_STATUSES = frozenset({400, 415, 422, 500})
"""How servers that take only text answer a token-id prompt (llama-cpp-python: 500; pydantic servers: 422)."""


def defuse_special_tokens(text: str, special_tokens: Sequence[str]) -> str:
    """`text` with a zero-width joiner after the first character of every special-token string in it.

    For the `text` prompt format only: a server tokenizing the prompt reads `<|endoftext|>` as the EOS token
    wherever it appears, so a user who types it would forge a turn boundary. With U+200D after its `<` it
    looks the same to people and is plain text to the tokenizer. (The `tokens` format needs none of this: the
    ids say which EOS is real.)
    """
    for token in special_tokens:
        if len(token) > 1 and token in text:
            text = text.replace(token, f"{token[0]}{ZERO_WIDTH_JOINER}{token[1:]}")
    return text


class _Malformed(Exception):
    """The server answered 200 with something that is not a completion."""


class OpenAIGenerator:
    """Generates through `POST {base_url}/completions`; concurrent calls are concurrent requests (the server
    batches them), so the scheduler leaves this generator as it is."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        context: int,
        settings: GenerationConfig,
        remote: OpenAIConfig,
        served_model: str,
    ) -> None:
        self._tokenizer = tokenizer
        self._settings = settings
        self._remote = remote
        self._prompt = PromptBuilder(tokenizer, context, settings.max_new_tokens)
        self._eos_text = str(tokenizer.eos_token)
        # Decided by the first request that succeeds (`auto`), or by the config.
        self._format: str | None = None if remote.prompt_format == "auto" else remote.prompt_format
        api_key = remote.api_key()
        self._secret = api_key if remote.api_key_env else ""
        self.info = ModelInfo(
            name=served_model,
            source=_without_credentials(remote.base_url),
            quantization="remote",
            backend="openai",
            parameters=None,
            context=context,
            projections=None,
        )
        self._client = AsyncOpenAI(
            base_url=remote.base_url,
            api_key=api_key,
            timeout=remote.timeout_seconds,
            max_retries=remote.max_retries,
        )

    @classmethod
    def from_config(cls, config: Config) -> OpenAIGenerator:
        """Load the tokenizer (no weights) and prepare the client; the server is not contacted yet."""
        tokenizer, context = load_tokenizer(config.model)
        remote = config.openai
        return cls(
            tokenizer,
            remote.context or context,
            config.generation,
            remote,
            served_model=remote.model or config.model.name,
        )

    @property
    def prompt_format(self) -> str:
        """`tokens` or `text`; `auto` until the server has answered once."""
        return self._format or "auto"

    def prompt(self, turns: Sequence[str], as_text: bool | None = None) -> list[int] | str:
        """What is sent as `prompt`: token ids, or their text with special tokens defused and within the
        same budget."""
        if not (self._format == "text" if as_text is None else as_text):
            return self._prompt.ids(turns)
        specials = self._tokenizer.all_special_tokens
        ids = self._prompt.ids([defuse_special_tokens(t, specials) for t in turns])
        # A turn cut to fit the context may start inside a character: its stray bytes decode to U+FFFD,
        # which the server's tokenizer reads as 3 bytes, pushing the prompt past the budget. Drop them.
        limit = len(ids)
        while True:
            text = self._tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            stray = text.startswith(REPLACEMENT_CHARACTER) and not any(
                REPLACEMENT_CHARACTER in t for t in turns
            )
            if not stray and len(self._tokenizer(text, add_special_tokens=False)["input_ids"]) <= limit:
                return text
            ids = ids[1:]

    def _request(self, turns: Sequence[str], as_text: bool | None = None) -> dict:
        s = self._settings
        sampling = {"temperature": s.temperature, "top_p": s.top_p} if s.do_sample else {"temperature": 0.0}
        return dict(
            model=self.info.name,
            prompt=self.prompt(turns, as_text),
            max_tokens=s.max_new_tokens,
            stop=[self._eos_text],
            **sampling,
            # Extras of vLLM and llama.cpp, each ignored by servers that do not know them. Neither has
            # no_repeat_ngram_size.
            extra_body={
                **({"top_k": s.top_k} if s.do_sample and s.top_k else {}),
                "repetition_penalty": s.repetition_penalty,
                "repeat_penalty": s.repetition_penalty,
                "skip_special_tokens": True,
            },
        )

    async def generate(self, turns: Sequence[str]) -> str:
        try:
            text = await self._complete(turns)
        # ValueError: a 200 whose body is not JSON, which the SDK lets through as it is.
        except (openai.OpenAIError, _Malformed, ValueError) as exc:
            reason = self._describe(exc, self._remote.max_retries + 1)
            logger.debug("openai backend: %s", reason)  # the engine logs it once, with the channel
            raise GenerationUnavailable(reason) from None
        # A server that ignored `stop` may run on into the next turn.
        return text.split(self._eos_text, 1)[0].strip()

    async def _complete(self, turns: Sequence[str], max_tokens: int | None = None) -> str:
        """The completion's text; with `auto`, token ids first (once, no retries), then text if refused."""
        extra = {} if max_tokens is None else {"max_tokens": max_tokens}
        if self._format is not None:
            return _reply_text(await self._client.completions.create(**{**self._request(turns), **extra}))
        try:
            once = self._client.with_options(max_retries=0)
            text = _reply_text(await once.completions.create(**{**self._request(turns, False), **extra}))
        except openai.APIStatusError as exc:
            if exc.status_code not in REFUSED_FORMAT_STATUSES:
                raise
            refused = f"HTTP {exc.status_code}: {_server_message(exc)}"
            text = _reply_text(
                await self._client.completions.create(**{**self._request(turns, True), **extra})
            )
            self._format = "text"
            logger.warning(
                "model server %s refused a token-id prompt (%s); sending text prompts from now on "
                "(set openai.prompt_format to skip this check)",
                self.info.source,
                self._scrub(refused),
            )
            return text
        self._format = "tokens"
        return text

    def _describe(self, exc: Exception, tries: int) -> str:
        """One line for the operator: which server, what went wrong, what to check. Never the key."""
        return self._scrub(self._explain(exc, tries))

    def _explain(self, exc: Exception, tries: int) -> str:
        server = f"model server {self.info.source}"
        attempts = f"{tries} attempt{'s' if tries > 1 else ''}"
        if isinstance(exc, _Malformed):
            return f"{server} sent a malformed reply ({exc})"
        if isinstance(exc, ValueError):
            return f"{server} sent a malformed reply (not JSON)"
        if isinstance(exc, openai.APITimeoutError):
            return f"{server} timed out (no answer within {self._remote.timeout_seconds:g}s, {attempts})"
        if isinstance(exc, openai.APIConnectionError):
            return f"{server} is unreachable ({_cause(exc)}, {attempts})"
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status in (401, 403):
                return f"{server} refused the API key (HTTP {status}); check openai.api_key_env"
            if status == 404:
                return f"{server} does not serve model {self.info.name!r} (HTTP 404); check openai.model"
            if status == 429 or status >= 500:
                return f"{server} answered HTTP {status} ({attempts}): {_server_message(exc)}"
            return f"{server} rejected the request (HTTP {status}: {_server_message(exc)})"
        if isinstance(exc, openai.APIResponseValidationError):
            return f"{server} sent a malformed reply (not a completion)"
        return f"{server} failed: {type(exc).__name__}"

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    async def probe(self) -> str:
        """One line on whether the server answers, lists the model and completes a one-token prompt, and
        in which prompt format (for `model-info`); never raises."""
        server = f"model server {self.info.source}"
        try:
            client = self._client.with_options(max_retries=0, timeout=PROBE_TIMEOUT_SECONDS)
            listed = await client.models.list()
            names = [m.id for m in listed.data]
        except (openai.OpenAIError, ValueError) as exc:
            return self._describe(exc, 1)
        except Exception:  # a model list of the wrong shape
            return f"{server} sent a malformed model list"
        if self.info.name not in names:
            served = ", ".join(names) or "nothing"
            return f"{server} is up but does not serve {self.info.name!r} (it serves {served})"
        try:
            await self._complete(["Hello"], max_tokens=1)
        except (openai.OpenAIError, _Malformed, ValueError) as exc:
            return f"{self._describe(exc, 1)} (a one-token completion of {self.info.name!r})"
        prompts = "token ids" if self._format == "tokens" else "text"
        return f"{server} is up and serves {self.info.name!r} (prompts sent as {prompts})"

    async def close(self) -> None:
        await self._client.close()


def _without_credentials(url: str) -> str:
    """`url` as shown in logs, errors and `model-info`: a `user:password@` in it stays out of them."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _reply_text(completion: object) -> str:
    """`choices[0].text`, checked: the SDK does not validate a 200 body's shape or types."""
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise _Malformed("no choices")
    text = getattr(choices[0], "text", None)
    if not isinstance(text, str):
        raise _Malformed(f"choices[0].text is {type(text).__name__}, not a string")
    return text


def _cause(exc: BaseException) -> str:
    """What the connection error was (`Connection refused`), in one short line."""
    return first_line(exc.__cause__ or exc)[:120]


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message or exc.message).strip()
    return (text.splitlines()[0] if text else "no details")[:200]
