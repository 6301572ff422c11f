"""What happens to an example longer than max_length: truncate, drop or split (pure functions).

Worked example, max_length 4, ids [a b c d e f]: truncate/right keeps [a b c d], truncate/left keeps
[c d e f], split gives [a b c d] and [e f], each fragment's first token with no loss.
"""

import numpy as np

from sftprep.encoding import Encoded


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
