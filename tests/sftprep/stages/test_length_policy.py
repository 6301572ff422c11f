"""The length policy on hand-made examples: what is kept, what is cut, why a row is dropped."""

import numpy as np
import pytest

from sftprep.drop_reasons import DropReason
from sftprep.stages.length_policy import admit, apply_length_policy
from sftprep.stages.masks import Encoded


def example(n: int, trained: slice = slice(1, None)) -> Encoded:
    mask = np.zeros(n, dtype=np.uint8)
    mask[trained] = 1
    return Encoded(np.arange(10, 10 + n, dtype=np.int32), mask)


@pytest.mark.parametrize(
    "overlong,side,pieces,cut",
    [
        ("truncate", "right", [[10, 11, 12, 13]], 2),
        ("truncate", "left", [[12, 13, 14, 15]], 2),
        ("split", "right", [[10, 11, 12, 13], [14, 15]], 0),
        ("drop", "right", [], 6),
    ],
)
def test_overlong_policies(overlong, side, pieces, cut):
    kept, got_cut = apply_length_policy(example(6), 4, overlong, side)
    assert [p.input_ids.tolist() for p in kept] == pieces and got_cut == cut
    assert all(p.loss_mask[0] == 0 for p in kept)  # each piece starts a segment
    assert all(len(p.input_ids) <= 4 for p in kept)


def test_a_short_example_is_kept_whole():
    e = example(3)
    kept, cut = apply_length_policy(e, 4, "truncate", "right")
    assert kept == [e] and cut == 0


def test_admit_counts_each_drop_under_its_reason():
    assert admit(example(6), 4, "drop", "right", False).dropped is DropReason.TOO_LONG
    assert (
        admit(example(3, slice(0, 0)), 4, "truncate", "right", False).dropped
        is DropReason.NO_LOSS_TOKENS
    )
    answer_at_end = example(6, slice(5, 6))
    cut_off = admit(answer_at_end, 4, "truncate", "right", False)
    assert cut_off.dropped is DropReason.NO_LOSS_TOKENS and cut_off.pieces == []
    kept = admit(answer_at_end, 4, "truncate", "left", False)
    assert kept.dropped is None and kept.cut == 2 and kept.pieces[0].loss_tokens == 1
    wrapped = admit(example(6), 4, "drop", "right", True)  # wrapped packing cuts rows itself
    assert wrapped.dropped is None and len(wrapped.pieces[0].input_ids) == 6
