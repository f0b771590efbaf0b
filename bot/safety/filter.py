"""The configured reply filter: the admin's blocklist, then the classifier against this conversation's
threshold. It implements `bot.core.safety.ReplyFilter`.

The classifier runs on its own thread, so a check never stalls the event loop (other channels keep being
read and answered); one thread, so checks never compete with each other for the cores generation uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from bot.core.safety import PASSED, Verdict
from bot.safety.blocklist import Blocklist
from bot.safety.classifiers import Classifier
from bot.safety.normalize import views

CLASSIFIER_OFF = 1.0
"""A threshold of 1 turns the classifier off (in a conversation, or everywhere); the blocklist still
applies."""


def _covers(prefix: str, key: str) -> bool:
    return key == prefix or key.startswith(prefix.rstrip(":") + ":")


class SafetyFilter:
    def __init__(
        self,
        classifier: Classifier | None,
        threshold: float,
        blocklist: Blocklist,
        channel_thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.classifier = classifier
        self.threshold = threshold
        self.blocklist = blocklist
        # Longest first: the most specific key or prefix decides.
        self._overrides = sorted((channel_thresholds or {}).items(), key=lambda item: -len(item[0]))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="safety")

    def threshold_for(self, channel_key: str) -> float:
        for prefix, threshold in self._overrides:
            if _covers(prefix, channel_key):
                return threshold
        return self.threshold

    def check_sync(self, text: str, channel_key: str) -> Verdict:
        entry = self.blocklist.match(text)
        if entry is not None:
            return Verdict(flagged=True, reason="blocklist", detail=f"blocklist entry {entry!r}")
        threshold = self.threshold_for(channel_key)
        if self.classifier is None or threshold >= CLASSIFIER_OFF:
            return PASSED
        score = max(self.classifier.scores(views(text)))
        if score >= threshold:
            return Verdict(
                flagged=True,
                reason="classifier",
                detail=f"{self.classifier.name} {score:.2f} >= {threshold:.2f}",
            )
        return PASSED

    async def check(self, text: str, channel_key: str) -> Verdict:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.check_sync, text, channel_key)

    def describe(self, channel_key: str) -> str:
        threshold = self.threshold_for(channel_key)
        classifier_on = self.classifier is not None and threshold < CLASSIFIER_OFF
        if not classifier_on and not len(self.blocklist):
            return "safety filter off"
        parts = []
        if classifier_on:
            parts.append(f"{self.classifier.name}, threshold {threshold:.2f} here (lower is stricter)")
        if len(self.blocklist):
            parts.append(f"blocklist of {len(self.blocklist)}")
        return "safety filter on: " + " + ".join(parts)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
