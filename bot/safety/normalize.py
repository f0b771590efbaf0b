"""Text as a filter should see it: the tricks people (and models) use to dodge word matching undone.

`fold` maps text to one spelling: compatibility forms (full-width, mathematical letters, ligatures) to plain
letters, accents and other combining marks dropped, format characters (zero-width spaces and joiners, soft
hyphens, direction marks) removed, case folded, and Cyrillic and Greek look-alikes (`а`, `е`, `о`, `і`, `ѕ`,
`ο`, `ρ` ...) mapped to the Latin letters they imitate. Leetspeak is not undone here (`3 cats` stays three
cats): the blocklist accepts look-alike digits and symbols inside a word (bot/safety/blocklist.py), and
`views` gives a classifier the de-leeted spelling as well.
"""

from __future__ import annotations

import re
import unicodedata

CONFUSABLES = str.maketrans(
    {
        # Cyrillic letters that look like Latin ones (after case folding).
        "а": "a", "в": "b", "г": "r", "д": "d", "е": "e", "з": "3", "и": "u", "к": "k", "л": "n", "м": "m",
        "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ч": "4", "ь": "b",
        "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ӏ": "l", "ԛ": "q", "ԝ": "w", "һ": "h",
        # Greek.
        "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o",
        "ρ": "p", "σ": "o", "ς": "s", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c",
        # Latin letters that NFKD leaves whole.
        "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŧ": "t", "ƒ": "f", "ɡ": "g", "ɑ": "a",
        "æ": "ae", "œ": "oe", "ð": "d", "þ": "p",
    }
)  # fmt: skip

LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", "$": "s"}
"""Digits and symbols that stand for letters at the start, inside or at the end of a word (`@ss`, `a$$`)."""
LEET_INSIDE = {"!": "i", "|": "l", "+": "t"}
"""Punctuation that stands for a letter only between two letters (`b!tch`; "hi!" keeps its "!")."""

_DROPPED = {"Mn", "Me", "Cf"}  # combining marks, enclosing marks, format characters (zero-width and such)
_EDGE = re.escape("".join(LEET))
_INSIDE = re.escape("".join(LEET) + "".join(LEET_INSIDE))
_LEET_RUN = re.compile(rf"(?<=[a-z])[{_INSIDE}]+(?=[a-z])|(?<=[a-z])[{_EDGE}]+|[{_EDGE}]+(?=[a-z])")
_UNLEET = LEET | LEET_INSIDE
_SPACED_OUT = re.compile(r"(?<![^\W_])[^\W_](?P<sep>[ .\-_*])(?:[^\W_](?P=sep)){2,}[^\W_](?![^\W_])")
_STRETCHED = re.compile(r"(.)\1{2,}")


def fold(text: str) -> str:
    """`text` in one spelling: compatibility forms, accents, format characters, case and look-alikes."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED)
    return text.casefold().translate(CONFUSABLES)


def unstretched(text: str) -> list[str]:
    """`text`, and if a character repeats three times or more ("fuuuuck", "assss"), the spellings with
    such runs cut to two and to one: the intended word has one of them."""
    forms = [text]
    for form in (_STRETCHED.sub(r"\1\1", text), _STRETCHED.sub(r"\1", text)):
        if form not in forms:
            forms.append(form)
    return forms


def views(text: str) -> list[str]:
    """The spellings of `text` a classifier scores (the highest score counts): as written, then folded with
    leetspeak inside words undone (`sh1t`, `@ss`, `b!tch`), spaced-out letters joined (`f u c k`,
    `f.u.c.k`), and stretched letters cut. Ordinary text usually gives one view."""
    folded = fold(text)
    folded = _SPACED_OUT.sub(lambda m: m.group(0).replace(m.group("sep"), ""), folded)
    folded = _LEET_RUN.sub(lambda m: "".join(_UNLEET[c] for c in m.group(0)), folded)
    found = [text]
    for form in unstretched(folded):
        if form != text.casefold() and form not in found:
            found.append(form)
    return found
