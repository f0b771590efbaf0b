"""A fake OpenAI-compatible completions server on 127.0.0.1 that generates real replies with a local model.

It answers like vLLM (`POST /v1/completions`, `GET /v1/models`, error bodies, stop strings,
skip_special_tokens) and checks what it receives: the prompt's type for the format, the EOS text among the
stop strings, the model name, the API key. Tests script faults for the next requests (`fail_next`) and take
it down and back up on the same port (`stop`, `start`) to see the client survive a server that misbehaves.

Like vLLM, it has no `no_repeat_ngram_size`; the shared contract compares greedy replies without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from bot.config import ModelConfig
from bot.models.loader import load_model

FAULTS = ("timeout", 500, 429, "garbage", "wrong-shape", "wrong-type", "ignore-stop")
"""`timeout`: no answer until well past any client timeout; 500/429 (with Retry-After): an error body;
`garbage`: 200 with a body that is not JSON; `wrong-shape`: 200 JSON without `choices`; `wrong-type`: 200 with
`choices[0].text` a number; `ignore-stop`: a real reply that runs on past the EOS text into another turn."""


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    body: dict
    authorization: str | None
    prompt_ids: list[int] | None
    """The prompt as the server's tokenizer sees it (a text prompt tokenized with special tokens matched)."""
    fault: str | int | None


class FakeOpenAIServer:
    """`await start()`, point a client at `base_url`, `await close()`; `requests` holds what arrived."""

    def __init__(
        self,
        model_dir,
        *,
        served_model: str = "tiny",
        api_key: str | None = None,
        hang_seconds: float = 10.0,
        retry_after: str = "0.1",
        text_prompts_only: bool = False,
    ) -> None:
        """`text_prompts_only`: answer a token-id prompt as llama-cpp-python's server does (HTTP 500; its
        `prompt` is `str | list[str]`)."""
        self.loaded = load_model(ModelConfig(name=str(model_dir), quantization="none", threads=1))
        self.tokenizer = self.loaded.tokenizer
        self.served_model = served_model
        self.api_key = api_key
        self.hang_seconds = hang_seconds
        self.retry_after = retry_after
        self.text_prompts_only = text_prompts_only
        self.requests: list[ReceivedRequest] = []
        self.faults: deque[str | int] = deque()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-openai")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def completions(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.body.get("prompt") is not None]

    def fail_next(self, *faults: str | int) -> None:
        """Answer the next completion requests with these faults, one each, in order."""
        for fault in faults:
            assert fault in FAULTS, fault
        self.faults.extend(faults)

    async def start(self) -> None:
        """Listen (again: on the same port after `stop`)."""
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Go down: close the listening socket and every connection, so that clients get refused."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def close(self) -> None:
        self._closing.set()
        await self.stop()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _models(self, request: web.Request) -> web.Response:
        if denied := self._check_key(request):
            return denied
        return web.json_response(
            {"object": "list", "data": [{"id": self.served_model, "object": "model", "owned_by": "fake"}]}
        )

    def _check_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Unauthorized")
        return None

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        fault = self.faults.popleft() if self.faults else None
        prompt_ids = self._prompt_ids(body.get("prompt"))
        self.requests.append(ReceivedRequest(body, request.headers.get("Authorization"), prompt_ids, fault))
        if fault is not None and fault != "ignore-stop":
            return await self._fault(fault)
        if denied := self._check_key(request):
            return denied
        if self.text_prompts_only and not isinstance(body.get("prompt"), str):
            return _error(500, "'int' object has no attribute 'encode'")
        if body.get("model") != self.served_model:
            return _error(404, f"The model `{body.get('model')}` does not exist.")
        if problem := self._check(body, prompt_ids):
            return _error(400, problem)
        loop = asyncio.get_running_loop()
        text, finish = await loop.run_in_executor(self._executor, self._generate, body, prompt_ids)
        if fault == "ignore-stop":
            text += f"{self.tokenizer.eos_token}and the next turn"
        return web.json_response(
            {
                "id": f"cmpl-{len(self.requests)}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": self.served_model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
                "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": 0, "total_tokens": 0},
            }
        )

    def _prompt_ids(self, prompt) -> list[int] | None:
        if isinstance(prompt, list) and all(type(t) is int for t in prompt):
            return list(prompt)
        if isinstance(prompt, str):  # special-token text becomes the special token, as on a real server
            return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return None

    def _check(self, body: dict, prompt_ids: list[int] | None) -> str | None:
        eos = self.tokenizer.eos_token
        max_tokens = body.get("max_tokens")
        if not prompt_ids:
            return "prompt must be a string or a list of token ids"
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return "max_tokens must be a positive integer"
        if eos not in (body.get("stop") or []):
            return f"stop must contain {eos!r} (the fake insists: DialoGPT ends its turn there)"
        if body.get("skip_special_tokens") is not True:
            return "skip_special_tokens must be true"
        if len(prompt_ids) + max_tokens > self.loaded.info.context:
            return f"prompt ({len(prompt_ids)}) + max_tokens ({max_tokens}) exceed the context"
        return None

    async def _fault(self, fault: str | int) -> web.StreamResponse:
        if fault == "timeout":
            with contextlib.suppress(TimeoutError):  # ends early when the server closes: tests never wait
                await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
            return _error(504, "too late")
        if fault == 429:
            response = _error(429, "rate limited")
            response.headers["Retry-After"] = self.retry_after
            return response
        if fault == 500:
            return _error(500, "internal server error")
        if fault == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="application/json")
        if fault == "wrong-shape":
            return web.json_response({"object": "text_completion", "result": "hello"})
        return web.json_response({"object": "text_completion", "choices": [{"index": 0, "text": 42}]})

    def _generate(self, body: dict, prompt_ids: list[int]) -> tuple[str, str]:
        """Greedy at temperature 0, else sampled; stops at EOS; text cut at the first stop string."""
        import torch

        temperature = float(body.get("temperature", 1.0))
        sample = temperature > 0
        eos_id = int(self.tokenizer.eos_token_id)
        with torch.inference_mode():
            output = self.loaded.model.generate(
                torch.tensor([prompt_ids]),
                attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                max_new_tokens=body["max_tokens"],
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=body.get("top_p", 1.0) if sample else None,
                top_k=body["top_k"] if sample and body.get("top_k", 0) > 0 else None,
                repetition_penalty=body.get("repetition_penalty", 1.0),
                no_repeat_ngram_size=0,
                eos_token_id=eos_id,
                pad_token_id=eos_id,
            )
        ids = output[0, len(prompt_ids) :].tolist()
        finish = "length"
        if eos_id in ids:
            ids, finish = ids[: ids.index(eos_id)], "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in body["stop"]:
            if stop in text:
                text, finish = text[: text.index(stop)], "stop"
        return text, finish


def _error(status: int, message: str) -> web.Response:
    """An error in vLLM's shape."""
    return web.json_response(
        {"object": "error", "message": message, "type": "BadRequestError", "code": status}, status=status
    )
