"""Which characters of a pre-formatted text train, found by markers (TRL's completion-only
collator, done on characters instead of token ids).

With `response_template` alone, what follows its last occurrence trains; with an
`instruction_template` too, what follows every response marker up to the next instruction marker
(or the end). Searching the text, not the token ids, means a marker that tokenizes differently in
context (Llama-2's "### Answer:" after a newline) is found all the same; the tokens are then
trained by the same overlap rule as chat masks (masks.token_range).

    "### Q: hi\\n### A: yo"   response "### A:"  ->  spans ((18, 21),) = " yo"
"""

import numpy as np

from sftprep.drop_reasons import DropReason
from sftprep.errors import RowError


def response_spans(text: str, response: str, instruction: str | None) -> tuple:
    """The character spans [start, end) of `text` that train; RowError when no marker is found."""
    if instruction is None:
        found = text.rfind(response)
        if found < 0:
            raise _missing(response)
        return ((found + len(response), len(text)),)
    spans, pos = [], 0
    while (found := text.find(response, pos)) >= 0:
        start = found + len(response)
        stop = text.find(instruction, start)
        end = len(text) if stop < 0 else stop
        spans.append((start, end))
        pos = end
    if not spans:
        raise _missing(response)
    return tuple(spans)


def id_spans(ids: np.ndarray, response: tuple, instruction: tuple) -> tuple:
    """The token spans [start, end) of `ids` that train, by the same rule as response_spans but
    matched on token ids (TRL's `response_template` given as ids); RowError when none is found.

        ids [5, 9, 9, 7, 1, 9, 9, 2]   response (9, 9)   ->  ((5, 8),)"""
    if instruction:
        spans, pos = [], 0
        while (found := _find(ids, response, pos)) >= 0:
            start = found + len(response)
            stop = _find(ids, instruction, start)
            end = len(ids) if stop < 0 else stop
            spans.append((start, end))
            pos = end
    else:
        found, pos, spans = -1, 0, []
        while (at := _find(ids, response, pos)) >= 0:
            found, pos = at, at + 1
        if found >= 0:
            spans = [(found + len(response), len(ids))]
    if not spans:
        raise _missing(list(response), "ids")
    return tuple(spans)


def _find(ids: np.ndarray, marker: tuple, start: int) -> int:
    """Index of the first occurrence of `marker` in ids[start:], or -1 (a byte search on the
    int32 buffer, kept only where it falls on a token boundary)."""
    haystack = np.ascontiguousarray(ids, dtype=np.int32).tobytes()
    needle = np.asarray(marker, dtype=np.int32).tobytes()
    at = haystack.find(needle, 4 * start)
    while at >= 0 and at % 4:
        at = haystack.find(needle, at + 1)
    return at // 4 if at >= 0 else -1


def _missing(response, on: str = "characters") -> RowError:
    return RowError(
        DropReason.NO_RESPONSE_TEMPLATE,
        f"the response template {response!r} is not in the text, so nothing would train; fix the "
        f"row or the template (a template is matched on {on}, exactly as written)",
    )
