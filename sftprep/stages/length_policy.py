"""Which encoded examples are kept, and what happens to one longer than max_length: truncate,
drop or split (pure functions; the caller counts each drop under its reason).

Worked example, max_length 4, ids [a b c d e f]: truncate/right keeps [a b c d], truncate/left keeps
[c d e f], split gives [a b c d] and [e f], each fragment's first token with no loss.
"""

from dataclasses import dataclass

import numpy as np

from sftprep.drop_reasons import DropReason
from sftprep.stages.masks import Encoded


@dataclass(frozen=True)
class Admitted:
    """What the policy made of one example: the pieces to keep, or the reason it is dropped."""

    pieces: list[Encoded]
    cut: int = 0
    """Tokens truncated away."""
    dropped: DropReason | None = None


def admit(encoded: Encoded, max_length: int, overlong: str, side: str, wrapped: bool) -> Admitted:
    """Keep an example that trains something, under the length policy (wrapped packing cuts rows
    itself, so nothing is cut here); drop it as no_loss_tokens or too_long otherwise."""
    if not has_loss(encoded):
        return Admitted([], 0, DropReason.NO_LOSS_TOKENS)
    pieces, cut = (
        ([encoded], 0) if wrapped else apply_length_policy(encoded, max_length, overlong, side)
    )
    if not pieces:
        return Admitted([], cut, DropReason.TOO_LONG)
    if not any(has_loss(p) for p in pieces):  # e.g. truncation cut off the whole answer
        return Admitted([], cut, DropReason.NO_LOSS_TOKENS)
    return Admitted(pieces, cut)


def has_loss(encoded: Encoded) -> bool:
    """True when at least one token counts toward the loss."""
    return encoded.loss_tokens > 0


def apply_length_policy(
    encoded: Encoded, max_length: int, overlong: str, side: str
) -> tuple[list[Encoded], int]:
    """Pieces to keep (empty = drop as too_long) and the number of tokens cut off."""
    n = len(encoded.input_ids)
    if n <= max_length:
        return [encoded], 0
    if overlong == "drop":
        return [], n
    if overlong == "truncate":
        cut = slice(0, max_length) if side == "right" else slice(n - max_length, n)
        return [_piece(encoded, cut)], n - max_length
    return [_piece(encoded, slice(s, min(s + max_length, n))) for s in range(0, n, max_length)], 0


def _piece(encoded: Encoded, cut: slice) -> Encoded:
    mask = encoded.loss_mask[cut].copy()
    mask[0] = 0  # a piece starts a new segment: its first token has nothing before it
    return Encoded(np.ascontiguousarray(encoded.input_ids[cut]), mask)
