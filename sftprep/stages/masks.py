"""Tokenize rendered examples and build their loss masks from character offsets.

A token is trained when its characters overlap a trained span, so every trained character is
covered by a trained token, even a token that straddles a span edge. Because offsets grow with
the token index, the tokens overlapping a span are one contiguous range: it is found from the
span's two ends with the tokenizer's own char -> token map (two look-ups per span, no per-token
Python work). `loss_mask[0]` is always 0: the first token has nothing before it to be predicted from.
"""

from dataclasses import dataclass

import numpy as np

from sftprep.errors import RowError
from sftprep.stages.fast_batch import FastEncoding, batch_token_ranges
from sftprep.stages.render import Rendered
from sftprep.stages.response_spans import id_spans


@dataclass(frozen=True)
class Encoded:
    """Token ids and loss mask of one example."""

    input_ids: np.ndarray
    """int32"""
    loss_mask: np.ndarray
    """uint8, 1 = counts toward the loss"""
    loss_tokens: int = -1
    """How many tokens count toward the loss (computed from the mask when not given)."""
    encoded_by: str = "hf"
    """fastokens, hf, or hf-fallback (the fast encoder ran but could not vouch for this row)."""
    located_by: str = ""
    """How its turns were located (Rendered.located_by)."""

    def __post_init__(self):
        if self.loss_tokens < 0:
            object.__setattr__(self, "loss_tokens", int(np.count_nonzero(self.loss_mask)))


def tokenize_batch(rendered: list[Rendered], backend, special_tokens: bool = True) -> list:
    """The Rust half: the tokenizer's Encodings of each rendered text, in order.

    One `encode_batch` per setting of add_special_tokens; the GIL is released throughout, so this
    can run in a thread while Python renders the next chunk.
    """
    out: list = [None] * len(rendered)
    for add_special in (True, False):
        idx = [
            i
            for i, r in enumerate(rendered)
            if (r.add_special_tokens and special_tokens) == add_special
        ]
        if idx:
            for i, enc in zip(
                idx,
                backend.encode_batch(
                    [rendered[i].text for i in idx], add_special_tokens=add_special
                ),
            ):
                out[i] = enc
    return out


def finish_batch(
    rendered: list[Rendered],
    encodings: list,
    bos_id: int | None,
    eos_id: int | None,
    special_tokens: bool = True,
    fast: bool = False,
) -> list[Encoded | RowError]:
    """The Python half: ids as numpy and the loss mask of each tokenized example (a RowError for
    a text whose id marker is missing). `fast`: the fast encoder was asked, so an HF Encoding
    among them is a fallback row (counted)."""
    searched = [
        i
        for i, (r, enc) in enumerate(zip(rendered, encodings))
        if isinstance(enc, FastEncoding) and not r.id_markers
    ]
    found = dict(
        zip(
            searched,
            batch_token_ranges(
                [encodings[i] for i in searched], [rendered[i].spans for i in searched]
            ),
        )
    )
    out = []
    for i, (r, enc) in enumerate(zip(rendered, encodings)):
        by = ("fastokens" if isinstance(enc, FastEncoding) else "hf-fallback") if fast else "hf"
        append_eos = r.append_eos and special_tokens
        out.append(_encode_one(enc, r, bos_id, eos_id, append_eos, found.get(i), by))
    return out


def token_range(enc, start: int, end: int) -> tuple[int, int] | None:
    """Indices [first, stop) of the tokens whose characters overlap [start, end), or None.
    A FastEncoding answers from its tokens' byte ends (the same rule, see fast_encoder.py)."""
    if isinstance(enc, FastEncoding):
        return enc.token_range(start, end)
    first = next((t for c in range(start, end) if (t := enc.char_to_token(c)) is not None), None)
    if first is None:
        return None
    last = next(t for c in range(end - 1, start - 1, -1) if (t := enc.char_to_token(c)) is not None)
    while last + 1 < len(
        enc
    ):  # a character can span several tokens (byte-level BPE): take them all
        chars = enc.token_to_chars(last + 1)
        if chars is None or chars[0] >= end or chars[1] <= chars[0]:
            break
        last += 1
    return first, last + 1


def _first_token_is_added(enc) -> bool:
    """Whether token 0 comes from the post-processor (BOS), not from the text."""
    if isinstance(enc, FastEncoding):
        return enc.first_token_is_added()
    return enc.token_to_chars(0) in (None, (0, 0))


def _trained_tokens(enc, rendered: Rendered, ids: np.ndarray) -> list[tuple[int, int]]:
    """[first, stop) token ranges that train: the id-marker spans (a RowError when a marker is
    missing), or each character span's tokens."""
    if rendered.id_markers:
        return id_spans(ids, *rendered.id_markers)
    return [found for s0, s1 in rendered.spans if (found := token_range(enc, s0, s1)) is not None]


def _encode_one(
    enc, rendered: Rendered, bos_id, eos_id, append_eos: bool, trained, encoded_by: str
) -> Encoded:
    """One example's ids and mask; `trained`: its token ranges when already found (a
    FastEncoding's, for the whole batch at once), else None."""
    raw = enc.ids
    ids = raw if isinstance(raw, np.ndarray) else np.fromiter(raw, dtype=np.int32, count=len(raw))
    mask = np.zeros(len(ids), dtype=np.uint8)
    if trained is None:
        try:
            trained = _trained_tokens(enc, rendered, ids)
        except RowError as err:
            return err
    for t0, t1 in trained:
        mask[t0:t1] = 1
    eos_trained = trained[-1][1] == len(ids) if rendered.id_markers else rendered.eos_trained
    if (
        bos_id is not None
        and len(ids) >= 2
        and ids[0] == bos_id
        and ids[1] == bos_id
        and _first_token_is_added(enc)
    ):
        ids, mask = ids[1:], mask[1:]  # the text already began with BOS: never a second one
    if append_eos and eos_id is not None and (len(ids) == 0 or ids[-1] != eos_id):
        ids = np.append(ids, np.int32(eos_id))
        mask = np.append(mask, np.uint8(eos_trained))
    elif append_eos and len(ids) and ids[-1] == eos_id:
        mask[-1] = eos_trained  # the tokenizer appended EOS: still the example's end
    if len(mask):
        mask[0] = 0
    return Encoded(ids, mask, encoded_by=encoded_by, located_by=rendered.located_by)
