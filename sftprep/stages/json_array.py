"""Stream the items of a top-level JSON array from a file, one at a time, in bounded memory.

`json.load` holds the whole document (and every parsed row) at once; a 10 GB Alpaca-style array
would need far more than 10 GB. Here the file is decoded in blocks and each item is parsed with
`json.JSONDecoder.raw_decode` as soon as it is complete, so memory holds one block plus one item.
Items are exactly what `json.loads` gives, and a malformed file fails with `json.loads`'s own
message, line and column. An item that is well-formed but past a limit of Python's parser (nested
too deep, an integer too long) is yielded as an UnparsedItem, and the array goes on after it.
"""

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK_BYTES = 1 << 20
JSON_WHITESPACE = " \t\n\r"
_NUMBER_CHARS = "0123456789.eE+-"
_DECODER = json.JSONDecoder()
_LONGEST_TOKEN_CUT = 16  # "-Infinity" or "\uXXXX" cut short, with room to spare


@dataclass(frozen=True)
class UnparsedItem:
    """An item json.loads refuses without it being malformed: RecursionError or ValueError."""

    error: Exception
    line: int
    """Line of the file where the item starts."""


class _Text:
    """The decoded text of a file, read block by block, with the position of its first character."""

    def __init__(self, handle: BinaryIO, block_bytes: int):
        self._handle, self.block_bytes = handle, block_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._bytes_read = 0
        self.buf = ""
        self.eof = False
        self.dropped_chars = 0  # characters before buf[0]
        self.dropped_lines = 0  # newlines before buf[0]
        self.dropped_col = 0  # characters between the last dropped newline and buf[0]

    def more(self, at_least: int = 0) -> bool:
        """Append the next block(s) to buf (at least `at_least` bytes); False at the end of the file."""
        if self.eof:
            return False
        data = self._handle.read(max(self.block_bytes, at_least))
        pending = len(self._utf8.getstate()[0])  # bytes of a character cut by the previous block
        try:
            self.buf += self._utf8.decode(data, final=not data)
        except UnicodeDecodeError as err:
            err.start += self._bytes_read - pending  # report the byte offset in the whole file
            raise
        self._bytes_read += len(data)
        self.eof = not data
        return True

    def drop(self, pos: int) -> int:
        """Forget buf[:pos] (parsed already); return 0, the new position of buf[pos]."""
        gone = self.buf[:pos]
        self.dropped_chars += pos
        newlines = gone.count("\n")
        if newlines:
            self.dropped_lines += newlines
            self.dropped_col = len(gone) - gone.rfind("\n") - 1
        else:
            self.dropped_col += len(gone)
        self.buf = self.buf[pos:]
        return 0

    def skip_space(self, pos: int) -> int:
        """Position of the next non-whitespace character (reading on as needed), or len(buf) at the end."""
        while True:
            while pos < len(self.buf) and self.buf[pos] in JSON_WHITESPACE:
                pos += 1
            if pos < len(self.buf) or not self.more():
                return pos

    def error(self, message: str, pos: int) -> json.JSONDecodeError:
        """A JSONDecodeError whose position, line and column count from the start of the file."""
        err = json.JSONDecodeError(message, self.buf, pos)
        if err.lineno == 1:
            err.colno += self.dropped_col
        err.lineno += self.dropped_lines
        err.pos += self.dropped_chars
        return err

    def cut_short(self, err: json.JSONDecodeError) -> bool:
        """Whether a parse error of buf may come from the value going on past the end of buf.

        The parser stops at the first character it cannot use; when the value is only cut short,
        that is the end of buf, or the start of the last token (a literal, an escape: a few
        characters), or the start of a string that is still open. Anywhere else the error is
        final: reading more could not change it.
        """
        return (
            err.msg.startswith("Unterminated string")
            or err.pos >= len(self.buf) - _LONGEST_TOKEN_CUT
        )


def iter_json_array(handle: BinaryIO, block_bytes: int | None = None) -> Iterator:
    """Yield the items of the JSON array in `handle` (binary, UTF-8) in order.

    Raises json.JSONDecodeError (line and column in the file) or UnicodeDecodeError (byte offset in
    the file) where json.loads would; items already yielded stay yielded.
    """
    text = _Text(handle, block_bytes or BLOCK_BYTES)
    pos = text.skip_space(0)
    if pos >= len(text.buf) or text.buf[pos] != "[":
        raise text.error("Expecting '['", pos)
    pos = text.skip_space(pos + 1)
    if pos < len(text.buf) and text.buf[pos] == "]":
        return _expect_end(text, pos + 1)
    while True:
        item, pos = _parse_item(text, pos)
        yield item
        pos = text.skip_space(pos)
        if pos >= len(text.buf):
            raise text.error("Expecting ',' delimiter", pos)
        if text.buf[pos] == "]":
            return _expect_end(text, pos + 1)
        if text.buf[pos] != ",":
            raise text.error("Expecting ',' delimiter", pos)
        pos = text.skip_space(pos + 1)


def _parse_item(text: _Text, pos: int):
    """Parse the value at buf[pos], reading more of the file while the value may be incomplete."""
    if pos >= text.block_bytes:
        pos = text.drop(pos)  # once per block of items, so the copying stays linear
    while True:
        try:
            item, end = _DECODER.raw_decode(text.buf, pos)
        except json.JSONDecodeError as err:
            if text.eof or not text.cut_short(err):
                raise text.error(err.msg, err.pos) from None
            # Incomplete: read on (doubling, so a huge item costs linear time) and retry.
            pos = text.drop(pos)
            text.more(len(text.buf))
            continue
        except (RecursionError, ValueError) as err:
            # Too deep, or a number too long: reading more cannot lift the limit.
            line = text.dropped_lines + text.buf.count("\n", 0, pos) + 1
            return UnparsedItem(err, line), _value_end(text, pos)
        if text.eof or (
            end < len(text.buf)
            and (text.buf[end] not in _NUMBER_CHARS or text.buf[end:].lstrip(_NUMBER_CHARS))
        ):
            return item, end
        # A number cut by the end of the buffer ("2." of "2.5e3") may go on in the next block.
        pos = text.drop(pos)
        text.more(len(text.buf))


def _value_end(text: _Text, pos: int) -> int:
    """Where the value at buf[pos] ends, found by counting brackets outside strings (no parser
    recursion, so any depth). Only for items json cannot parse; malformed parts after a too-deep
    part are not checked, the item is dropped whole."""
    depth, i = 0, pos
    while True:
        char = _char(text, i, pos)
        i += 1
        if char == '"':
            i = _string_end(text, i, pos)
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif depth == 0 and char not in _NUMBER_CHARS:
            return i - 1  # the end of a top-level number
        if depth == 0 and char in '"]}':
            return i


def _string_end(text: _Text, i: int, start: int) -> int:
    """Position after the closing quote of the string whose body starts at buf[i]."""
    while True:
        char = _char(text, i, start)
        if char == "\\":
            i += 1
        elif char == '"':
            return i + 1
        i += 1


def _char(text: _Text, i: int, start: int) -> str:
    """buf[i], reading on as needed; an error naming `start` when the file ends first."""
    while i >= len(text.buf):
        if not text.more():
            raise text.error("Unterminated value", start)
    return text.buf[i]


def _expect_end(text: _Text, pos: int) -> None:
    pos = text.skip_space(pos)
    if pos < len(text.buf):
        raise text.error("Extra data", pos)
