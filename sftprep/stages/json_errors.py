"""How a JSON parse failure is worded, and the two limits of Python's parser as row errors.

`json.loads` raises RecursionError on a value nested past Python's recursion limit (about 1,000
levels) and ValueError on an integer of over 4,300 digits; neither is malformed JSON, and neither
may end a build in a traceback. Every JSON reader (JSONL lines, array items, JSON text columns)
turns them into `too_deep` and `number_too_large` here, so the messages and reasons agree.
"""

import json
import sys

from sftprep.drop_reasons import DropReason
from sftprep.errors import RowError


def limit_error(err: BaseException, where: str) -> RowError | None:
    """The RowError for a JSON parse failure of `where` (e.g. "line 3") that hit a parser limit;
    None for any other failure (malformed JSON, bad UTF-8), which the caller words itself."""
    if isinstance(err, RecursionError):
        return RowError(
            DropReason.TOO_DEEP,
            f"{where} nests JSON deeper than Python can parse (about "
            f"{sys.getrecursionlimit():,} levels); flatten it or remove it",
        )
    if isinstance(err, ValueError) and not isinstance(
        err, (json.JSONDecodeError, UnicodeDecodeError)
    ):
        return RowError(
            DropReason.NUMBER_TOO_LARGE,
            f"{where} holds an integer of over {sys.get_int_max_str_digits():,} digits, more than "
            "Python converts; write it as a string or remove it",
        )
    return None


def json_problem(err: json.JSONDecodeError, text: str | None = None) -> str:
    """What is wrong, where: `Expecting ',' delimiter at column 7`. A raw control character in a
    string (JSON allows them only escaped) is named, with the escape to write; `text` is the
    parsed text when err.pos indexes it (a JSONL line), to name the character."""
    where = f"at column {err.colno}"
    if err.msg.startswith("Invalid control character"):
        char = text[err.pos] if text is not None and 0 <= err.pos < len(text) else None
        what = f"U+{ord(char):04X} " if char else ""
        escape = f"\\u{ord(char):04x}" if char else "e.g. \\t, \\n or \\u0000"
        return (
            f"a raw control character {what}inside a string {where} (JSON allows it only "
            f"escaped: write {escape})"
        )
    return f"{err.msg.removesuffix(' at')} {where}"
