"""User text made safe to store and to put in a prompt, whatever a platform delivered.

JSON can carry lone UTF-16 surrogates (`"\\udd97"`), which Python decodes into a `str` that no UTF-8 database
driver accepts, and PostgreSQL rejects NUL characters in text. Both would let a message be answered but not
stored. Everything else (control characters, right-to-left marks, zero-width characters, special-token text)
is kept as the user wrote it: the prompt encodes special-token text as plain text (bot/prompt.py).
"""

from __future__ import annotations

import unicodedata

REPLACEMENT = "\ufffd"


def storable_text(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD and NUL characters removed."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16, a valid surrogate pair becomes its character and a lone one becomes U+FFFD.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def is_blank(text: str) -> bool:
    """True when nothing would be visible: only whitespace, control and format characters (zero-width
    spaces and joiners, direction marks), as a message that was only a mention often is."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in text)
