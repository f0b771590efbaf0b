"""The safety filter's implementations: text normalization, the admin's blocklist, offline classifiers.

`build_filter(settings)` turns the `[safety]` section into the `ReplyFilter` the engine consults
(bot/core/safety.py); the composition root calls it at start-up, so a missing classifier stops start-up.
"""

from __future__ import annotations

from bot.core.safety import NoFilter, ReplyFilter


def build_filter(settings) -> ReplyFilter:
    """The filter `settings` (`SafetyConfig`) describes; `NoFilter` when there is nothing to check."""
    from bot.safety.blocklist import Blocklist
    from bot.safety.classifiers import load_classifier
    from bot.safety.filter import SafetyFilter

    blocklist = Blocklist(settings.blocklist)
    classifier = load_classifier(settings)
    if classifier is None and not len(blocklist):
        return NoFilter()
    return SafetyFilter(classifier, settings.threshold, blocklist, settings.channel_thresholds)
