"""The `openvino` backend: the model exported to OpenVINO IR on first use, cached, and run by openvino-genai.

Export (`export_model`): OpenVINO's own converter traces the transformers model (`ov.convert_model`), its
key/value cache becomes state inside the model (`apply_make_stateful_transformation`, as optimum-intel does),
and NNCF compresses every weight matrix to INT8 (`nncf.compress_weights`: data-free, per output channel)
unless `model.quantization = "none"`. optimum-intel is not used: it requires an older transformers than the
bot's. The result, with the tokenizer and what `ModelInfo` reports, is cached under
`cache_dir()/openvino/<key>` like the CTranslate2 conversions (`bot.models.converted`: key, lock, temporary
directory, pruning, rebuilds).

Generation: openvino-genai's `ContinuousBatchingPipeline` takes prompts as token ids (built by the shared
`PromptBuilder`, so special-token text in a message stays text) and runs every request it holds in one batch
per step (paged attention, one key/value cache shared by all requests). Requests join the running batch at
the next step and leave it when they end: a message that arrives while others are being answered does not
wait for them. This generator therefore batches by itself (`batches_itself`), and the cross-channel scheduler
leaves it as it is. A request nobody waits for any more is cancelled at the next step.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import itertools
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from bot.config import Config, GenerationConfig, cache_dir
from bot.core.generator import ModelInfo, ProjectionCounts
from bot.errors import ModelLoadError
from bot.generation.local import LocalGenerator
from bot.models import converted
from bot.models.converted import MARKER, local_snapshot, reason, write_marker
from bot.models.loader import model_context, quiet_transformers, require_eos, resolve_source


def _decline_telemetry() -> None:
    """OpenVINO reports being imported, and its converter and NNCF their use, to Intel's web analytics (and
    keep a client id in `~/intel`) unless a consent file there says no. The bot reports nothing: every
    consent check in this process answers "declined". Done before `openvino` is first imported."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # nothing can report then
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED  # type: ignore[method-assign]


_decline_telemetry()

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402
import openvino_genai as ov_genai  # noqa: E402
import torch  # noqa: E402
from openvino import opset13  # noqa: E402

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bump when the export changes: every cached export is redone."""
IR_FILE = "openvino_model.xml"
PROMPT_CHUNK = 256
"""Prompt tokens one step may run (openvino-genai's `max_num_batched_tokens`): a longer prompt is run in
chunks, between which the running replies go on decoding."""


@dataclass(eq=False, slots=True)
class _Request:
    prompt: list[int]
    abandoned: Callable[[], bool]
    future: Future = field(default_factory=Future)
    ids: list[int] = field(default_factory=list)
    handle: ov_genai.GenerationHandle | None = None


@dataclass(slots=True)
class StepStats:
    """What the continuous batch has done (for `status` and the benchmark)."""

    steps: int = 0
    replies: int = 0
    largest_batch: int = 0
    cancelled: int = 0


class OpenVINOGenerator(LocalGenerator):
    """Generates with an openvino-genai `ContinuousBatchingPipeline`, requests joining at each step.

    Every call into the pipeline happens on one thread at a time (`_stepping`): the generation thread for
    `generate`, the caller's thread for `generate_batch_sync`. Whoever steps serves every request queued, so a
    request queued while another thread steps is picked up at that thread's next step.
    """

    batches_itself = True
    """Requests join the running batch at every step: the cross-channel scheduler would only delay them."""

    def __init__(
        self,
        pipeline: ov_genai.ContinuousBatchingPipeline,
        tokenizer: PreTrainedTokenizerBase,
        info: ModelInfo,
        settings: GenerationConfig,
        stop_at_eos: bool = True,
    ) -> None:
        super().__init__(info, tokenizer, settings, stop_at_eos)
        self._pipeline = pipeline
        self._inbox: collections.deque[_Request] = collections.deque()
        self._running: list[_Request] = []
        self._stepping = threading.Lock()
        self._request_ids = itertools.count()
        self._closed = False
        self.stats = StepStats()

    async def generate(self, turns: Sequence[str]) -> str:
        loop = asyncio.get_running_loop()
        abandoned = threading.Event()
        request = self._submit(self.prompt_ids(turns), abandoned.is_set)
        # The generation thread steps the pipeline; if it already is, this job finds nothing left to do.
        loop.run_in_executor(self._executor, self._step_until_idle)
        try:
            # Shielded: the request's own future is settled by the stepping thread, cancelled or not.
            ids = await asyncio.shield(asyncio.wrap_future(request.future))
        except asyncio.CancelledError:  # timed out or shut down: the request is dropped at the next step
            abandoned.set()
            raise
        return self.decode(ids)

    def _generate_ids(self, prompts: list[list[int]], abandoned: Callable[[], bool]) -> list[list[int]]:
        requests = [self._submit(prompt, abandoned) for prompt in prompts]
        self._step_until_idle()
        return [request.future.result() for request in requests]

    def _submit(self, prompt: list[int], abandoned: Callable[[], bool]) -> _Request:
        """Queue a prompt for the next step; `abandoned()` is asked after every step it is in."""
        request = _Request(prompt, abandoned)
        self._inbox.append(request)
        return request

    def _abandoned(self, request: _Request) -> bool:
        return self._closed or request.abandoned()

    def _step_until_idle(self) -> None:
        """Step the pipeline until no request is left (a no-op while another thread is stepping it)."""
        while self._inbox or self._running:
            if not self._stepping.acquire(blocking=False):
                return  # the stepping thread serves our requests too, and checks the inbox once more after
            try:
                self._run()
            except BaseException as exc:  # every waiting caller gets the error, not a hang
                for request in [*self._running, *self._inbox]:
                    request.future.set_exception(exc)
                self._running, self._inbox = [], collections.deque()
                raise
            finally:
                self._stepping.release()

    def _run(self) -> None:
        config = generation_config(self._settings, self._eos_id, self._stop_at_eos)
        while True:
            while self._inbox:
                request = self._inbox.popleft()
                if self._abandoned(request):
                    request.future.set_result([])
                    continue
                prompt = ov.Tensor(np.asarray(request.prompt, dtype=np.int64))
                request.handle = self._pipeline.add_request(next(self._request_ids), prompt, config)
                self._running.append(request)
            if not self._running:
                return
            self.stats.largest_batch = max(self.stats.largest_batch, len(self._running))
            self._pipeline.step()
            self.stats.steps += 1
            self._running = [request for request in self._running if not self._collect(request)]

    def _collect(self, request: _Request) -> bool:
        """Take the request's new tokens; True once it is over (ended, or cancelled as abandoned)."""
        handle = request.handle
        assert handle is not None
        while handle.can_read():
            for output in handle.read().values():
                request.ids.extend(output.generated_ids)
        if handle.get_status() == ov_genai.GenerationStatus.RUNNING:
            if not self._abandoned(request):
                return False
            handle.cancel()  # freed at the next step
            self.stats.cancelled += 1
        else:
            self.stats.replies += 1
        request.future.set_result(request.ids)
        return True

    async def close(self) -> None:
        self._closed = True  # whatever is queued or running ends at the next step
        await super().close()


def generation_config(s: GenerationConfig, eos_id: int, stop_at_eos: bool) -> ov_genai.GenerationConfig:
    """openvino-genai's settings for ours: the torch backend's sampling, penalties and stopping."""
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = s.max_new_tokens
    config.eos_token_id = eos_id
    if not stop_at_eos:  # EOS never sampled, as in the other backends: every reply is max_new_tokens long
        config.min_new_tokens = s.max_new_tokens
    config.repetition_penalty = s.repetition_penalty
    config.no_repeat_ngram_size = s.no_repeat_ngram_size
    config.do_sample = s.do_sample
    if s.do_sample:
        if s.top_k:  # 0: the whole vocabulary, openvino-genai's default
            config.top_k = s.top_k
        config.top_p = s.top_p
        config.temperature = s.temperature
    return config


def load_openvino(config: Config, stop_at_eos: bool = True) -> OpenVINOGenerator:
    """Export the configured model if it is not cached yet (slow, once), then load the exported one."""
    quiet_transformers()
    quantization = config.model.quantization
    source = resolve_source(config.model.name)
    local_dir, identity = local_snapshot(source, "openvino")
    model_dir = ensure_exported(local_dir, identity, quantization)
    meta = json.loads((model_dir / MARKER).read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    batch = config.batching.max_batch_size if config.batching.enabled else 1
    pipeline = ov_genai.ContinuousBatchingPipeline(
        str(model_dir), scheduler_config(batch), "CPU", device_properties(config.model.threads, quantization)
    )
    total = int(meta["projections"])
    info = ModelInfo(
        name=config.model.name,
        source=source,
        quantization=quantization,
        backend="openvino",
        parameters=int(meta["parameters"]),
        context=int(meta["context"]),
        projections=ProjectionCounts(int8=total if quantization == "int8" else 0, total=total),
        runtime=f"openvino-genai {ov_genai.__version__}, continuous batching of up to {batch} replies, "
        f"IR in {model_dir}",
    )
    logger.info("model ready: %s", info.summary())
    return OpenVINOGenerator(pipeline, tokenizer, info, config.generation, stop_at_eos=stop_at_eos)


def scheduler_config(max_batch: int) -> ov_genai.SchedulerConfig:
    """Up to `max_batch` replies decoding at once; the key/value cache grows as they need (no fixed pool)."""
    scheduler = ov_genai.SchedulerConfig()
    scheduler.max_num_seqs = max_batch
    scheduler.max_num_batched_tokens = PROMPT_CHUNK
    scheduler.dynamic_split_fuse = True
    scheduler.cache_size = 0  # grown on demand
    scheduler.enable_prefix_caching = False
    return scheduler


def device_properties(threads: int, quantization: str) -> dict:
    """The CPU plugin's settings: threads, and exact FP32 arithmetic for an FP32 model.

    FP32 (`none`) keeps every activation and the key/value cache in f32, so greedy replies match the torch
    backend's token for token; INT8 leaves the plugin its defaults (a u8 key/value cache where it is faster).
    """
    properties: dict = {"INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1}
    if quantization == "none":
        properties |= {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
    return properties


def ensure_exported(local_dir: Path, identity: str, quantization: str, root: Path | None = None) -> Path:
    """The exported model's directory, exporting `local_dir` first if it is not in the cache."""
    root = root or cache_dir() / "openvino"
    # An IR written by a newer OpenVINO may not load in an older one.
    version = ov.get_version().split("-")[0]
    key = converted.cache_key(local_dir, identity, quantization, format=FORMAT_VERSION, openvino=version)
    label = "INT8" if quantization == "int8" else "FP32"
    return converted.ensure_built(
        root,
        key,
        lambda out: export_model(local_dir, out, quantization),
        doing=f"exporting {local_dir} to OpenVINO {label}",
        done=f"exported {local_dir}",
    )


def export_model(local_dir: Path, out: Path, quantization: str) -> None:
    """Export the transformers model in `local_dir` to a stateful OpenVINO IR in `out`, INT8 weights unless
    `quantization` is `none`, with its tokenizer and `dialobot.json`."""
    from transformers import AutoModelForCausalLM

    from bot.models.quantize import count_projections

    try:
        tokenizer = AutoTokenizer.from_pretrained(local_dir, local_files_only=True)
        require_eos(tokenizer, str(local_dir))
        model = AutoModelForCausalLM.from_pretrained(
            local_dir, local_files_only=True, attn_implementation="sdpa"
        ).eval()
        with warnings.catch_warnings():  # tracing warns of every Python branch it fixes; none matters here
            warnings.simplefilter("ignore")
            ov_model = _stateful_ir(model)
        if quantization == "int8":
            ov_model = _compress_weights(ov_model)
    except ModelLoadError:
        raise
    except Exception as exc:  # missing or unreadable files, invalid configs, architectures that do not trace
        logger.debug("exporting %s failed", local_dir, exc_info=True)
        raise ModelLoadError(f"model.name: could not export {local_dir} to OpenVINO: {reason(exc)}") from None
    meta = {
        "name": getattr(model.config, "_name_or_path", "") or str(local_dir),
        "parameters": sum(p.numel() for p in model.parameters()),
        "context": model_context(model.config),
        "projections": count_projections(model).total,
        "format": FORMAT_VERSION,
        "source": str(local_dir),
        "quantization": quantization,
    }
    try:
        out.mkdir(parents=True)
        ov.save_model(ov_model, out / IR_FILE, compress_to_fp16=False)
        model.config.save_pretrained(out)
        tokenizer.save_pretrained(out)
    except OSError as exc:  # a full disk, a read-only cache directory
        raise ModelLoadError(f"could not write the OpenVINO model to {out}: {exc.strerror or exc}") from None
    write_marker(out, meta, "OpenVINO")


def _compress_weights(ov_model: ov.Model) -> ov.Model:
    """Every weight matrix (projections, embeddings, LM head) to INT8, per output channel, data-free; NNCF's
    progress table and bar silenced."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)


def _stateful_ir(model) -> ov.Model:
    """`model` traced to OpenVINO with its key/value cache as inputs and outputs, then made stateful.

    The traced signature is what openvino-genai expects of a decoder: `input_ids`, `attention_mask`,
    `position_ids` and `beam_idx` (which reorders the cache rows) in, `logits` out, the cache kept inside
    the model between calls. Attention is traced as `ScaledDotProductAttention`, which the continuous
    batching pipeline rewrites into paged attention.
    """
    from openvino._offline_transformations import apply_make_stateful_transformation

    layers = model.config.num_hidden_layers
    batch, past, new = 2, 3, 2
    with torch.no_grad():  # the cache's shape per layer: (batch, heads, positions, head size)
        probe = model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True).past_key_values
    heads, head_size = probe.layers[0].keys.shape[1], probe.layers[0].keys.shape[3]
    example = {
        "input_ids": torch.ones(batch, new, dtype=torch.long),
        "attention_mask": torch.ones(batch, past + new, dtype=torch.long),
        "position_ids": torch.arange(past, past + new).expand(batch, -1),
        "past": tuple(torch.zeros(batch, heads, past, head_size) for _ in range(2 * layers)),
    }
    with torch.no_grad():
        ov_model = ov.convert_model(_WithFlatCache(model), example_input=example)
    cache_in = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    cache_out = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    for port, name in zip(
        ov_model.inputs, ["input_ids", "attention_mask", "position_ids", *cache_in], strict=True
    ):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, ["logits", *cache_out], strict=True):
        port.get_tensor().set_names({name})
    shapes = {
        ov_model.input(name): ov.PartialShape([-1, -1])
        for name in ("input_ids", "attention_mask", "position_ids")
    }
    shapes |= {ov_model.input(name): ov.PartialShape([-1, heads, -1, head_size]) for name in cache_in}
    ov_model.reshape(shapes)
    _add_beam_idx(ov_model, cache_in)
    apply_make_stateful_transformation(ov_model, dict(zip(cache_in, cache_out, strict=True)))
    _init_state_from_batch(ov_model)
    return ov_model


class _WithFlatCache(torch.nn.Module):
    """The model with its cache as a flat tuple of tensors (key, value per layer), which tracing needs."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, past):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i, layer in enumerate(cache.layers):
            # Set, not `update`d: an update concatenates onto an empty 1-D tensor, which does not convert.
            layer.lazy_initialization(past[2 * i], past[2 * i + 1])
            layer.keys, layer.values = past[2 * i], past[2 * i + 1]
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        flat = [tensor for layer in output.past_key_values.layers for tensor in (layer.keys, layer.values)]
        return (output.logits, *flat)


def _add_beam_idx(ov_model: ov.Model, cache_inputs: list[str]) -> None:
    """A `beam_idx` input that selects the cache rows each step continues (as optimum-intel adds it)."""
    batch = ov_model.input("input_ids").get_partial_shape()[0]
    beam_idx = opset13.parameter(name="beam_idx", dtype=ov.Type.i32, shape=ov.PartialShape([batch]))
    beam_idx.output(0).get_tensor().add_names({"beam_idx"})
    ov_model.add_parameters([beam_idx])
    for name in cache_inputs:
        port = ov_model.input(name)
        consumers = port.get_target_inputs()
        gathered = opset13.gather(port, beam_idx, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gathered.output(0))
    ov_model.validate_nodes_and_infer_types()


def _init_state_from_batch(ov_model: ov.Model) -> None:
    """Start each cache state empty with the batch size of `input_ids` (zero positions)."""
    shape = opset13.shape_of(ov_model.input("input_ids"), output_type="i64")
    batch = opset13.gather(shape, opset13.constant([0]), opset13.constant(0))
    for op in ov_model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims = [dim.min_length for dim in op.get_output_partial_shape(0)]
        parts = [batch] + [opset13.constant(np.array([dim], dtype=np.int64)) for dim in dims[1:]]
        zeros = opset13.broadcast(
            opset13.constant(0.0, dtype=op.get_output_element_type(0)), opset13.concat(parts, axis=0)
        )
        op.set_arguments([zeros])
    ov_model.validate_nodes_and_infer_types()
