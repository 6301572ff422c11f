"""Which characters of a pre-formatted text train, found by markers (TRL's completion-only
collator, done on characters instead of token ids).

With `response_template` alone, what follows its last occurrence trains; with an
`instruction_template` too, what follows every response marker up to the next instruction marker
(or the end). Searching the text, not the token ids, means a marker that tokenizes differently in
context (Llama-2's "### Answer:" after a newline) is found all the same; the tokens are then
trained by the same overlap rule as chat masks (masks.token_range).

    "### Q: hi\\n### A: yo"   response "### A:"  ->  spans ((18, 21),) = " yo"
"""

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


def _missing(response: str) -> RowError:
    return RowError(
        DropReason.NO_RESPONSE_TEMPLATE,
        f"the response template {response!r} is not in the text, so nothing would train; fix the "
        "row or the template (a template is matched on characters, exactly as written)",
    )
