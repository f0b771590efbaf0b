"""The openvino backend: one cached export per source model and quantization, continuous batching, the CLI.

The replies themselves (greedy, EOS, special-token text, penalties, abandoned replies) are checked against the
torch backend in test_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from bot.config import parse_config
from bot.core.generator import ProjectionCounts
from bot.generation.backends import openvino as ov_backend
from bot.generation.backends.openvino import load_openvino

CONVERSATIONS = [["Hello"], ["Hello", "Hi", "How are you?"], ["What is your name?"]]


def ov_config(model_dir, quantization: str = "int8", **generation):
    return parse_config(
        {
            "model": {
                "name": str(model_dir),
                "backend": "openvino",
                "quantization": quantization,
                "threads": 1,
            },
            "generation": {"max_new_tokens": 8, **generation},
        }
    )


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIALOBOT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "openvino"


@pytest.fixture
def shared_cache(tmp_path_factory, monkeypatch):
    """One cache for the tests that do not count exports: the tiny model is exported once for them."""
    root = tmp_path_factory.getbasetemp() / "openvino-shared-cache"
    monkeypatch.setenv("DIALOBOT_CACHE_DIR", str(root))
    return root / "openvino"


@pytest.fixture
def exports(monkeypatch):
    """Every export's (source, quantization), each still exported for real."""
    calls = []
    export = ov_backend.export_model

    def recording(local_dir, out, quantization):
        calls.append((local_dir, quantization))
        export(local_dir, out, quantization)

    monkeypatch.setattr(ov_backend, "export_model", recording)
    return calls


class PausedPipeline:
    """The pipeline, held before its `at`-th step with all `requests` in it, until the test says go.

    Steps are counted from the one where the last of `requests` joined: on a busy machine the stepping thread
    can be several steps ahead before the event loop has submitted them all.
    """

    def __init__(self, pipeline, at: int, requests: int) -> None:
        self._pipeline, self._at, self._requests = pipeline, at, requests
        self._added = self._steps = 0
        self.reached, self.go = threading.Event(), threading.Event()

    def add_request(self, *args):
        self._added += 1
        return self._pipeline.add_request(*args)

    def step(self) -> None:
        if self._added >= self._requests:
            self._steps += 1
            if self._steps == self._at:
                self.reached.set()
                assert self.go.wait(60)
        self._pipeline.step()

    def __getattr__(self, name):
        return getattr(self._pipeline, name)


def paused_at(generator, step: int, requests: int) -> PausedPipeline:
    paused = PausedPipeline(generator._pipeline, step, requests)
    generator._pipeline = paused
    return paused


@contextlib.asynccontextmanager
async def submitted_together(generator):
    """Requests made inside join the first step together: on a busy machine the stepping thread could
    otherwise run one of them for many steps before the event loop submits the next."""
    generator._stepping.acquire()  # a stepping job started meanwhile finds it taken and leaves
    try:
        yield
        await asyncio.sleep(0)  # each new task runs up to its first await: its request is in the inbox
    finally:
        generator._stepping.release()
    asyncio.get_running_loop().run_in_executor(generator._executor, generator._step_until_idle)


def test_first_use_exports_and_later_loads_reuse_the_cache(tiny_model_dir, cache, exports, caplog):
    caplog.set_level("INFO", logger="bot.models.converted")  # which logs each export
    first = load_openvino(ov_config(tiny_model_dir))
    second = load_openvino(ov_config(tiny_model_dir))
    assert exports == [(tiny_model_dir.resolve(), "int8")]
    assert sum("to OpenVINO INT8 (first use; cached in" in r.message for r in caplog.records) == 1
    (exported,) = [d for d in cache.iterdir() if d.is_dir()]  # no build directory left behind
    assert {"openvino_model.xml", "openvino_model.bin", "tokenizer.json", "dialobot.json"} <= {
        f.name for f in exported.iterdir()
    }
    for generator in (first, second):
        info = generator.info
        assert (info.backend, info.quantization, info.context) == ("openvino", "int8", 1024)
        assert info.source == str(tiny_model_dir)
        assert info.projections == ProjectionCounts(int8=9, total=9)
        assert "continuous batching of up to 8 replies" in info.runtime
    assert first.info.parameters == json.loads((exported / "dialobot.json").read_text())["parameters"] > 0


def test_fp32_is_its_own_export_and_a_changed_model_is_exported_again(
    tiny_model_dir, tmp_path, cache, exports
):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    assert load_openvino(ov_config(model_dir, "none")).info.projections == ProjectionCounts(int8=0, total=9)
    load_openvino(ov_config(model_dir))
    weights = model_dir / "model.safetensors"
    later = weights.stat().st_mtime + 60
    os.utime(weights, (later, later))  # as when the model is retrained and saved again
    load_openvino(ov_config(model_dir))
    assert [q for _, q in exports] == ["none", "int8", "int8"]
    kept = [
        json.loads((d / "dialobot.json").read_text()) for d in cache.iterdir() if not d.name.startswith(".")
    ]
    assert sorted(m["quantization"] for m in kept) == ["int8", "none"]  # the old weights' INT8 export is gone


def test_a_directory_that_holds_no_usable_model_is_one_line(tmp_path, cache):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": "x"}')
    with pytest.raises(Exception) as error:
        load_openvino(ov_config(tmp_path))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message


def test_sampled_replies_are_text(tiny_model_dir, shared_cache):
    for top_k in (50, 0):  # 0: no top-k limit, as in transformers
        generator = load_openvino(ov_config(tiny_model_dir, do_sample=True, top_k=top_k, max_new_tokens=16))
        replies = generator.generate_batch_sync(CONVERSATIONS)
        assert all(isinstance(r, str) and r for r in replies), replies


def test_without_stopping_at_eos_every_reply_has_max_new_tokens(tiny_model_dir, shared_cache):
    generator = load_openvino(ov_config(tiny_model_dir, do_sample=False), stop_at_eos=False)
    prompts = [generator.prompt_ids(turns) for turns in CONVERSATIONS]
    assert [len(ids) for ids in generator._generate_ids(prompts, lambda: False)] == [8, 8, 8]


async def test_a_message_arriving_mid_batch_joins_it_instead_of_waiting(tiny_model_dir, shared_cache):
    """Counted in pipeline steps, not seconds: a late request must end about its own length after it
    arrived, not after the running batch ends."""
    generator = load_openvino(
        ov_config(tiny_model_dir, do_sample=False, max_new_tokens=40), stop_at_eos=False
    )
    loop = asyncio.get_running_loop()
    paused = paused_at(generator, 15, requests=len(CONVERSATIONS))
    finished_at: list[int | None] = []  # the step each request ended at, in the order they came
    submit = generator._submit

    def recorded(prompt, abandoned):
        request = submit(prompt, abandoned)
        index = len(finished_at)
        finished_at.append(None)
        # Settled on the stepping thread as the request ends: the step count is the one it ended at.
        request.future.add_done_callback(lambda _, i=index: finished_at.__setitem__(i, generator.stats.steps))
        return request

    generator._submit = recorded
    async with submitted_together(generator):
        early = [asyncio.create_task(generator.generate(turns)) for turns in CONVERSATIONS]
    assert await loop.run_in_executor(None, paused.reached.wait, 60)  # the three are well into their replies
    arrived = generator.stats.steps
    late = asyncio.create_task(generator.generate(["What time is it?"]))
    await asyncio.sleep(0)  # the late request is queued
    paused.go.set()
    await asyncio.gather(late, *early)
    *early_ends, late_end = finished_at
    assert generator.stats.largest_batch == 4
    assert max(early_ends) < late_end
    # One step per token (the prompt's step gives the first): it ends 40 steps after it arrived, where a
    # request that waited for the running batch to end would need about 25 more.
    assert late_end - arrived <= 40 + 1
    assert generator.stats.replies == 4 and generator.stats.cancelled == 0
    await generator.close()


async def test_an_abandoned_request_leaves_the_batch_and_the_others_finish(tiny_model_dir, shared_cache):
    generator = load_openvino(
        ov_config(tiny_model_dir, do_sample=False, max_new_tokens=60), stop_at_eos=False
    )
    loop = asyncio.get_running_loop()
    paused = paused_at(generator, 5, requests=2)
    async with submitted_together(generator):
        kept = asyncio.create_task(generator.generate(["Hello"]))
        dropped = asyncio.create_task(generator.generate(["What is your name?"]))
    assert await loop.run_in_executor(None, paused.reached.wait, 60)
    dropped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dropped
    paused.go.set()
    await kept
    assert generator.stats.cancelled == 1 and generator.stats.replies == 1
    assert generator.stats.steps == 60  # the survivor's 60 tokens; the dropped one left at step 5
    await generator.close()


@pytest.mark.process
def test_model_info_on_the_command_line_and_no_usage_reports(tiny_model_dir, tmp_path):
    """`model-info` names the runtime; the export writes nothing of OpenVINO's usage reporting to the home
    directory (a client id in ~/intel is the first thing it keeps when it reports)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "DIALOBOT_CACHE_DIR": str(tmp_path / "cache"),
        "HOME": str(home),
    }
    env.pop("DIALOBOT_CONFIG", None)
    env.pop("CI", None)  # OpenVINO's reporting stays off in CI by itself; the bot must turn it off anywhere
    result = subprocess.run(
        [sys.executable, "-m", "bot", "model-info", "--backend", "openvino", "--model", str(tiny_model_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "backend:      openvino" in result.stdout
    assert "projections:  9/9 INT8" in result.stdout
    assert "runtime:      openvino-genai" in result.stdout
    assert not (home / "intel").exists()
