"""Offensive-text classifiers: a score from 0 (fine) to 1 (offensive) per text, computed offline.

- `profanity_check` (the default, extra `safety`): alt-profanity-check, a linear model over word n-grams
  trained on about 200k labelled comments, shipped inside the package. Milliseconds per reply, no download.
- `detoxify` (extra `detoxify`): Detoxify's transformer classifiers; the score is the highest of its labels
  (toxicity, severe toxicity, obscene, threat, insult, identity attack, ...). Its weights are downloaded on
  first use (GitHub releases and the Hugging Face hub) or read from local copies
  (`safety.detoxify_checkpoint`, `safety.detoxify_config_dir`).

Both are loaded once at start-up; a missing package or missing weights stop start-up with one line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from bot.errors import ConfigError, first_line

logger = logging.getLogger(__name__)


class Classifier(Protocol):
    name: str

    def scores(self, texts: Sequence[str]) -> list[float]:
        """One score in [0, 1] per text; blocking (the filter runs it off the event loop)."""


class ProfanityCheck:
    name = "profanity_check"

    def __init__(self) -> None:
        try:
            from profanity_check import predict_prob
        except ImportError as exc:
            raise ConfigError(
                "safety.classifier = profanity_check needs the safety extra: "
                f"pip install 'dialobot[safety]' ({first_line(exc)}), or set safety.classifier = \"none\""
            ) from None
        self._predict_prob = predict_prob

    def scores(self, texts: Sequence[str]) -> list[float]:
        return [float(p) for p in self._predict_prob(list(texts))]


DETOXIFY_MODELS = ("original", "unbiased", "multilingual", "original-small", "unbiased-small")


class DetoxifyClassifier:
    name = "detoxify"

    def __init__(self, model: str = "original", checkpoint: str = "", config_dir: str = "") -> None:
        try:
            from detoxify import Detoxify
        except ImportError as exc:
            raise ConfigError(
                "safety.classifier = detoxify needs the detoxify extra: "
                f"pip install 'dialobot[detoxify]' ({first_line(exc)})"
            ) from None
        try:
            self._model = Detoxify(
                model_type=model, checkpoint=checkpoint or None, huggingface_config_path=config_dir or None
            )
        except Exception as exc:
            if checkpoint:
                where = f"could not load safety.detoxify_checkpoint {checkpoint} ({first_line(exc)})"
            else:
                where = (
                    f"could not get the {model!r} weights ({first_line(exc)}); Detoxify downloads them on "
                    "first use, so run once where GitHub and the Hugging Face hub can be reached, or set "
                    "safety.detoxify_checkpoint and safety.detoxify_config_dir to local copies"
                )
            raise ConfigError(
                f'safety.classifier = detoxify: {where}; or use classifier = "profanity_check"'
            ) from None
        self.labels = tuple(self._model.class_names)
        self._thread = threading.local()

    def scores(self, texts: Sequence[str]) -> list[float]:
        if not getattr(self._thread, "single", False):
            # torch's thread count is per thread: one for checks, so they never compete with generation for
            # the cores (on 2 busy cores, 0.3 s per reply with one thread against 1-2 s with two).
            import torch

            torch.set_num_threads(1)
            self._thread.single = True
        results = self._model.predict(list(texts))
        columns = [results[label] for label in self.labels]
        if len(texts) == 1:  # Detoxify returns plain numbers for a single text
            columns = [[c] if isinstance(c, float) else c for c in columns]
        return [max(float(column[i]) for column in columns) for i in range(len(texts))]


def load_classifier(settings) -> Classifier | None:
    """The classifier `settings` (`SafetyConfig`) name, loaded; None for `none`."""
    if settings.classifier == "none":
        return None
    if settings.classifier == "profanity_check":
        return ProfanityCheck()
    return DetoxifyClassifier(
        settings.detoxify_model, settings.detoxify_checkpoint, settings.detoxify_config_dir
    )
