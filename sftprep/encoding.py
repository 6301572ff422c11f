"""Tokenize rendered examples and build their loss masks from character offsets (numpy, no
per-token Python loops).

A token is trained when its characters overlap a trained span, so every trained character is
covered by a trained token, even a token that straddles a span edge. `loss_mask[0]` is always 0:
the first token of an example has nothing before it to be predicted from.
"""

from dataclasses import dataclass

import numpy as np

from sftprep.rendering import Rendered


@dataclass(frozen=True)
class Encoded:
    """Token ids and loss mask of one example."""

    input_ids: np.ndarray
    """int32"""
    loss_mask: np.ndarray
    """uint8, 1 = counts toward the loss"""


def encode_batch(rendered: list[Rendered], backend, bos_id: int | None, eos_id: int | None, special_tokens: bool = True) -> list[Encoded]:
    """Encode many rendered examples with the Rust tokenizer in batches."""
    out: list[Encoded | None] = [None] * len(rendered)
    for add_special in (True, False):
        idx = [i for i, r in enumerate(rendered) if (r.add_special_tokens and special_tokens) == add_special]
        if not idx:
            continue
        encodings = backend.encode_batch([rendered[i].text for i in idx], add_special_tokens=add_special)
        for i, enc in zip(idx, encodings):
            append_eos = rendered[i].append_eos and special_tokens
            out[i] = _encode_one(enc.ids, enc.offsets, rendered[i], bos_id, eos_id, append_eos)
    return out


def _encode_one(ids, offsets, rendered: Rendered, bos_id, eos_id, append_eos: bool) -> Encoded:
    ids = np.asarray(ids, dtype=np.int32)
    offs = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    if bos_id is not None and len(ids) >= 2 and ids[0] == bos_id and ids[1] == bos_id and offs[0, 1] == 0:
        ids, offs = ids[1:], offs[1:]  # the text already began with BOS: never a second one
    starts, ends = offs[:, 0], offs[:, 1]
    mask = np.zeros(len(ids), dtype=bool)
    nonempty = ends > starts
    for s0, s1 in rendered.spans:
        mask |= nonempty & (starts < s1) & (ends > s0)
    if append_eos and eos_id is not None and (len(ids) == 0 or ids[-1] != eos_id):
        ids = np.append(ids, np.int32(eos_id))
        mask = np.append(mask, True)
    elif append_eos and len(ids) and ids[-1] == eos_id:
        mask[-1] = True  # the tokenizer itself appended EOS: it is still the example's end token
    if len(mask):
        mask[0] = False
    return Encoded(ids, mask.astype(np.uint8))
