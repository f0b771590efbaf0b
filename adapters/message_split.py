"""Splitting a long reply into messages a chat platform accepts, without breaking its code blocks.

Platforms cap a message's length (Discord at 2,000 characters). A reply over the cap is cut at line
boundaries, else at word boundaries, else anywhere. A fenced code block that fits in one message is never
split; a longer one is closed at the end of a message and reopened, with its language tag, in the next, so
every message renders as code on its own. SDK-free, so every adapter can use it with its own limit.
"""

from __future__ import annotations

from dataclasses import dataclass

FENCE = "```"
_CLOSE = "\n" + FENCE  # what ends a message cut inside a code block


@dataclass(slots=True)
class _Block:
    lines: list[str]  # with their line endings
    lang: str | None = None  # None: prose; "" or a tag such as "python": a fenced code block
    closed: bool = False


def split_message(text: str, limit: int) -> list[str]:
    """`text` as messages of at most `limit` characters; [] for blank text, [text] when it fits."""
    if limit < 2 * len(_CLOSE) + 16:
        raise ValueError(f"limit {limit} is too small to split messages")
    if not text.strip():
        return []
    if len(text) <= limit:
        return [text]
    packer = _Packer(limit)
    for block in _blocks(text):
        if block.lang is None:
            for line in block.lines:
                packer.add_prose(line)
        else:
            packer.add_code(block)
    packer.flush()
    return packer.chunks


def _blocks(text: str) -> list[_Block]:
    """`text` as alternating runs of prose lines and fenced code blocks."""
    blocks: list[_Block] = []
    code: _Block | None = None
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if code is not None:
            code.lines.append(line)
            if FENCE in stripped:
                code.closed = True
                code = None
        elif stripped.startswith(FENCE) and FENCE not in stripped[len(FENCE) :]:
            words = stripped[len(FENCE) :].split(maxsplit=1)
            code = _Block([line], lang=words[0] if words else "")
            blocks.append(code)
        elif blocks and blocks[-1].lang is None:
            blocks[-1].lines.append(line)
        else:
            blocks.append(_Block([line]))
    return blocks


def _pieces(line: str, size: int) -> list[str]:
    """`line` cut into pieces of at most `size` characters, after a space where there is one."""
    pieces = []
    while len(line) > size:
        cut = line.rfind(" ", 0, size + 1)
        cut = cut + 1 if cut > 0 else size
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return pieces


class _Packer:
    """Fills messages greedily, line by line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[str] = []
        self.buf = ""

    def room(self) -> int:
        return self.limit - len(self.buf)

    def flush(self) -> None:
        chunk = self.buf.strip("\n").rstrip()
        if chunk.strip():
            self.chunks.append(chunk)
        self.buf = ""

    def add_prose(self, line: str) -> None:
        if len(line) > self.room():
            self.flush()
        for piece in _pieces(line, self.limit):
            if len(piece) > self.room():
                self.flush()
            self.buf += piece

    def add_code(self, block: _Block) -> None:
        whole = "".join(block.lines)
        if len(whole) <= self.room():
            self.buf += whole
            return
        self.flush()
        if len(whole) <= self.limit:
            self.buf = whole
            return
        # Too long for one message: close the block at each cut and reopen it, with its tag, in the next.
        opener = FENCE + block.lang + "\n"
        if len(opener) + len(_CLOSE) >= self.limit // 2:
            opener = FENCE + "\n"  # an absurdly long tag would leave no room for code
        body = block.lines[1:-1] if block.closed else block.lines[1:]
        self.buf = opener
        for line in body:
            for piece in _pieces(line, self.limit - len(opener) - len(_CLOSE)):
                if len(self.buf) + len(piece) + len(_CLOSE) > self.limit:
                    self.buf = self.buf.rstrip("\n") + _CLOSE
                    self.flush()
                    self.buf = opener
                self.buf += piece
        if block.closed:
            self.buf = self.buf.rstrip("\n") + _CLOSE + "\n"
