"""The admin's own words and patterns (`safety.blocklist`), matched as whole words after normalization.

An entry is a word or phrase (`idiot`, `kill yourself`), a word stem with `*` (`fuck*` also matches
"fucking"; `*` in front matches word endings), or a regular expression after `re:` (matched against the
folded text, see bot/safety/normalize.py). Words and phrases match:

- in any case, accents, full-width or mathematical letters, with zero-width characters or soft hyphens
  inside, and with Cyrillic or Greek look-alike letters (`fold`);
- with look-alike digits and symbols for letters (`sh1t`, `@sshole`, `a$$`, `b!tch`, `wh0re`) and with `*`
  or `#` masking inner letters (`f*ck`, `c#nt`);
- with a letter stretched (`fuuuuck`, `assss`: runs of three or more count as one or two);
- spaced out with one separator used throughout (`f u c k`, `f.u.c.k`, `f-u-c-k`);
- only as whole words: an entry never matches inside a longer word, so `cunt` leaves Scunthorpe alone,
  `penis` Penistone, `sex` Essex and Middlesex, `cock` Hancock and cocktail, `ass` class and assess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bot.safety.normalize import LEET, LEET_INSIDE, fold, unstretched

MASKS = "*#"
_LOOKS_LIKE: dict[str, str] = {}
for _symbol, _letter in (LEET | LEET_INSIDE).items():
    _LOOKS_LIKE[_letter] = _LOOKS_LIKE.get(_letter, _letter) + _symbol
_LOOKS_LIKE["l"] += "1i"  # "1" and "|" are read as "l" as much as "i"
_LOOKS_LIKE["i"] += "l"
_NOT_IN_A_WORD = r"(?<![^\W_])"
_WORD_ENDS = r"(?![^\W_])"


def _letter(ch: str, inner: bool) -> str:
    options = _LOOKS_LIKE.get(ch, ch) + (MASKS if inner else "")
    return re.escape(ch) if len(options) == 1 else f"[{re.escape(options)}]"


def compile_entry(entry: str) -> re.Pattern[str]:
    """The pattern for one blocklist entry (raises `re.error` for a bad `re:` entry)."""
    entry = entry.strip()
    if entry.startswith("re:"):
        return re.compile(entry[3:], re.IGNORECASE)
    stem, prefix = entry.rstrip("*"), entry.startswith("*")
    suffix = stem != entry
    words = fold(stem.lstrip("*")).split()
    parts = []
    for n, word in enumerate(words):
        letters = [
            _letter(ch, 0 < i < len(word) - 1) if ch.isalnum() else re.escape(ch) for i, ch in enumerate(word)
        ]
        # One separator, the same between every letter: "f u c k", "f.u.c.k", or none.
        parts.append(
            letters[0] + (f"(?P<sep{n}>[ .\\-_]?)" + f"(?P=sep{n})".join(letters[1:]) if letters[1:] else "")
        )
    pattern = r"[\W_]+".join(parts)
    return re.compile(("" if prefix else _NOT_IN_A_WORD) + pattern + ("" if suffix else _WORD_ENDS))


class Blocklist:
    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = tuple(e for e in (e.strip() for e in entries) if e)
        self._patterns = [compile_entry(e) for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, text: str) -> str | None:
        """The first entry `text` contains, or None."""
        if not self._patterns:
            return None
        forms = unstretched(fold(text))
        for entry, pattern in zip(self.entries, self._patterns, strict=True):
            if any(pattern.search(form) for form in forms):
                return entry
        return None
