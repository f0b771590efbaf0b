"""The cache of converted models, shared by the backends that convert a model on first use (CTranslate2,
OpenVINO).

A conversion needs the FP32 model in memory and takes a while, so it happens once per (source model, runtime,
quantization): the result goes to `cache_dir()/<runtime>/<key>` with a marker file (`dialobot.json`, what
`ModelInfo` reports). The key changes with the source's files, so a retrained or updated model is converted
again and its older conversion pruned. A conversion is built into a temporary directory under a file lock and
renamed into place, so processes starting at once convert once and nobody loads a half-written directory; an
entry without its marker (damaged) is rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import list_repo_files, snapshot_download

from bot.config import DEMO_MODEL
from bot.errors import ConfigError, ModelLoadError
from bot.models.loader import about_to_download
from bot.models.prequantized import is_prequantized

logger = logging.getLogger(__name__)

MARKER = "dialobot.json"
# Files a conversion reads from a hub snapshot: config, tokenizer, and one copy of the PyTorch weights
# (hub repos often also hold TF, Flax and ONNX weights, several GB we would never read).
_HUB_CONFIG_FILES = ["*.json", "*.txt", "*.model"]
_SAFETENSORS = ["model*.safetensors"]
_PYTORCH_BIN = ["pytorch_model*.bin"]
# Which source files decide the converted model, for the cache key.
_SOURCE_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin")


def local_snapshot(source: str, backend: str) -> tuple[Path, str]:
    """The local directory holding `source`, and what identifies its version (a hub commit, or nothing)."""
    path = Path(source)
    if path.is_dir():
        if is_prequantized(path):  # torch's own INT8 state dict: nothing else can read it
            raise ConfigError(
                f"model.name: {source} holds a model pre-quantized for the torch backend, which {backend} "
                f'cannot convert: set model.backend = "torch" (--backend torch), or name the FP32 model'
            )
        return path.resolve(), ""
    cached = _cached_snapshot(source)
    if cached is not None:
        return cached, cached.name
    about_to_download(source)
    try:
        files = list_repo_files(source)
        weights = _SAFETENSORS if any(f.endswith(".safetensors") for f in files) else _PYTORCH_BIN
        snapshot = Path(snapshot_download(source, allow_patterns=_HUB_CONFIG_FILES + weights))
    except Exception as exc:  # network, HTTP and hub errors come in many types; all mean "not available"
        raise ModelLoadError(
            f"could not download model {source!r} from the Hugging Face hub ({reason(exc)}); "
            f"use --model {DEMO_MODEL} for the offline demo model"
        ) from None
    return snapshot, snapshot.name


def _cached_snapshot(repo_id: str) -> Path | None:
    """The hub cache's snapshot of `repo_id` if it holds a config and weights (the torch backend's, say)."""
    try:
        snapshot = Path(
            snapshot_download(
                repo_id, local_files_only=True, allow_patterns=_HUB_CONFIG_FILES + _SAFETENSORS + _PYTORCH_BIN
            )
        )
    except Exception:  # not cached (LocalEntryNotFoundError), or a malformed repo id (HFValidationError)
        return None
    has_weights = any(snapshot.glob("model*.safetensors")) or any(snapshot.glob("pytorch_model*.bin"))
    return snapshot if (snapshot / "config.json").is_file() and has_weights else None


def cache_key(local_dir: Path, identity: str, quantization: str, **runtime: object) -> str:
    """Stable for one source model, quantization and `runtime` facts (format and runtime versions); changes
    when any of the source's files does."""
    files = {
        f.name: [f.stat().st_size, f.stat().st_mtime_ns]
        for f in sorted(local_dir.iterdir())
        if f.suffix in _SOURCE_SUFFIXES and f.is_file()
    }
    payload = {
        **runtime,
        "source": str(local_dir),
        "revision": identity,
        "files": files,
        "quantization": quantization,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def ensure_built(root: Path, key: str, build: Callable[[Path], None], doing: str, done: str) -> Path:
    """`root/key`, built by `build(out)` if it is not cached yet; older conversions of the same source and
    quantization are pruned. A build is logged, `doing` before and `done` with its time after: it can take
    minutes, once per model."""

    def timed(out: Path) -> None:
        logger.info("%s (first use; cached in %s)", doing, root / key)
        started = time.perf_counter()
        build(out)
        logger.info("%s in %.1fs", done, time.perf_counter() - started)

    target = build_once(root / key, timed)
    prune_older_conversions(root, target)
    return target


def prune_older_conversions(root: Path, current: Path) -> None:
    """Delete earlier conversions of the same source and quantization (a retrained or updated model): each
    is as large as the model, and nothing loads them any more."""
    meta = json.loads((current / MARKER).read_text())
    for other in root.iterdir():
        marker = other / MARKER
        if other == current or other.name.startswith(".") or not marker.is_file():
            continue
        try:
            theirs = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if (theirs.get("source"), theirs.get("quantization")) == (meta["source"], meta["quantization"]):
            logger.info("removing %s, an older conversion of %s", other, meta["source"])
            shutil.rmtree(other, ignore_errors=True)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, built by `build(tmp)` into a temporary directory renamed into place if it does not exist.

    Under a file lock (as `ensure_demo_model` builds the demo model), so that processes and threads starting
    at once build it once, and nobody ever loads a half-written directory.
    """
    if (target / MARKER).is_file():
        return target
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # per open file, so it also serializes threads of one process
        if (target / MARKER).is_file():
            return target
        for stale in root.glob(f".{target.name}-build-*"):  # left by a conversion that was interrupted
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-build-", dir=root))
        try:
            build(tmp / "model")
            if target.exists():  # without its marker: damaged by hand or by a disk error; replaced whole
                shutil.rmtree(target)
            os.replace(tmp / "model", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_marker(out: Path, meta: dict, what: str) -> None:
    """Write `meta` as the marker: the last file of a conversion, so its presence means "complete"."""
    try:
        (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as exc:  # a full disk, a read-only cache directory
        raise ModelLoadError(f"could not write the {what} model to {out}: {exc.strerror or exc}") from None


def reason(exc: BaseException) -> str:
    """An exception's message on one line: its first line, and the next when the first ends in a colon."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
