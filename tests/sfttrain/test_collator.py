"""Padding-free collation: the worked example of the module docstring, and contract checks."""

import numpy as np
import pytest
import torch

from schemas import INPUT_IDS, LOSS_MASK, SEQ_LENS
from sfttrain.collator import MODEL_INPUT_IDS, collate_padding_free
from sfttrain.errors import SfttrainError


def row(ids, mask, seq_lens):
    return {
        INPUT_IDS: np.array(ids, np.int32),
        LOSS_MASK: np.array(mask, np.uint8),
        SEQ_LENS: np.array(seq_lens, np.int32),
    }


def test_worked_example():
    batch = collate_padding_free(
        [row([5, 6, 7, 8, 9], [0, 1, 1, 0, 1], [3, 2]), row([4, 3], [0, 1], [2])]
    )
    assert batch[MODEL_INPUT_IDS].tolist() == [[5, 6, 7, 8, 9, 4, 3]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, 3]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1]]
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == [0, 3, 5, 7]
    assert batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == batch["max_length_k"] == 3
    assert batch["use_cache"] is False
    assert "attention_mask" not in batch
    assert (
        batch[MODEL_INPUT_IDS].dtype
        == batch["labels"].dtype
        == batch["position_ids"].dtype
        == torch.int64
    )


def test_unpacked_rows_take_the_same_path():
    batch = collate_padding_free([row([1, 2, 3], [0, 1, 1], [3]), row([4, 5], [0, 0], [2])])
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, -100]]


def test_inconsistent_row_is_refused():
    with pytest.raises(SfttrainError, match="seq_lens"):
        collate_padding_free([row([1, 2, 3], [0, 1, 1], [2])])


def test_loss_on_an_example_start_is_refused():
    with pytest.raises(SfttrainError, match="first token"):
        collate_padding_free([row([1, 2, 3, 4], [0, 1, 1, 1], [2, 2])])
