"""Unit tests for `split_message`: limits, cut points, and code blocks that stay code blocks."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.message_split import FENCE, split_message

FENCE_LINE = re.compile(r"^[ \t]*```", re.MULTILINE)


def _without_fences(text: str) -> str:
    """Non-blank characters outside fence lines: what must survive splitting, in order."""
    lines = [line for line in text.splitlines() if not line.strip().startswith(FENCE)]
    return "".join("".join(lines).split())


def test_short_text_is_one_message_unchanged():
    assert split_message("hello\n\n  world ", 2000) == ["hello\n\n  world "]


def test_blank_text_is_no_message():
    assert split_message(" \n ", 2000) == []


def test_cuts_at_line_boundaries():
    lines = [f"line {i:03d} " + "x" * 40 for i in range(100)]
    chunks = split_message("\n".join(lines), 500)
    assert all(len(c) <= 500 for c in chunks)
    assert [line for c in chunks for line in c.split("\n")] == lines


def test_cuts_a_long_line_at_word_boundaries():
    words = [f"word{i}" for i in range(1000)]
    chunks = split_message(" ".join(words), 200)
    assert all(len(c) <= 200 for c in chunks)
    assert [w for c in chunks for w in c.split()] == words


def test_cuts_a_word_longer_than_the_limit():
    chunks = split_message("a" * 450, 200)
    assert chunks == ["a" * 200, "a" * 200, "a" * 50]


def test_code_block_that_fits_starts_a_new_message_instead_of_being_cut():
    prose = "intro " * 30
    code = "```python\n" + "print('hi')\n" * 10 + "```"
    chunks = split_message(prose + "\n" + code + "\nafter", 250)
    assert chunks[0] == prose.rstrip()
    assert chunks[1].startswith(code)


def test_long_code_block_is_closed_and_reopened_with_its_language():
    body = [f"x{i} = {i}  # a line of code" for i in range(120)]
    text = "Here you go:\n```python\n" + "\n".join(body) + "\n```\nDone."
    chunks = split_message(text, 2000)
    assert len(chunks) > 1
    assert all(len(c) <= 2000 for c in chunks)
    for chunk in chunks:
        assert len(FENCE_LINE.findall(chunk)) % 2 == 0, chunk
    code_chunks = [c for c in chunks if "x" in c and "= " in c]
    assert all("```python\n" in c for c in code_chunks)
    assert chunks[-1].endswith("```\nDone.")
    code_lines = [line for c in chunks for line in c.splitlines() if line.startswith("x")]
    assert code_lines == body


def test_unclosed_block_is_closed_in_every_message_but_the_last():
    text = "```\n" + "y = 1\n" * 500
    chunks = split_message(text, 1000)
    assert all(c.startswith("```\n") for c in chunks)
    assert all(c.endswith("\n```") for c in chunks[:-1])
    assert not chunks[-1].endswith("```")


def test_inline_fence_on_one_line_is_prose():
    text = "use ```x = 1``` here\n" * 100
    chunks = split_message(text, 300)
    assert all(len(c) <= 300 for c in chunks)
    assert "```x = 1```" in chunks[1]


def test_rejects_a_tiny_limit():
    with pytest.raises(ValueError):
        split_message("hello", 10)


_line = st.one_of(
    st.text(alphabet="ab c\t", max_size=120),
    st.sampled_from(["```", "```py", "```javascript", "", "   "]),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_line, max_size=60), limit=st.integers(min_value=40, max_value=400))
def test_properties(lines, limit):
    text = "\n".join(lines)
    chunks = split_message(text, limit)
    assert all(len(c) <= limit for c in chunks)
    assert all(c.strip() for c in chunks)
    assert _without_fences("\n".join(chunks)) == _without_fences(text)
    if len(FENCE_LINE.findall(text)) % 2 == 0:  # every code block is closed: so is every message's
        assert all(len(FENCE_LINE.findall(c)) % 2 == 0 for c in chunks)
