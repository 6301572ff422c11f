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


def test_seq_idx_numbers_each_tokens_example():
    import numpy as np

    from sfttrain.collator import collate_padding_free

    rows = [
        {"input_ids": np.array([5, 6, 7, 8, 9]), "loss_mask": np.array([0, 1, 1, 0, 1]), "seq_lens": np.array([3, 2])},
        {"input_ids": np.array([4, 3]), "loss_mask": np.array([0, 1]), "seq_lens": np.array([2])},
    ]  # fmt: skip
    batch = collate_padding_free(rows, seq_idx=True)
    assert batch["seq_idx"].tolist() == [[0, 0, 0, 1, 1, 2, 2]]
    assert str(batch["seq_idx"].dtype) == "torch.int32"
    assert "seq_idx" not in collate_padding_free(rows)


def test_only_models_whose_code_reads_seq_idx_get_it():
    from transformers import AutoConfig, AutoModelForCausalLM

    from sfttrain.collator import reads_seq_idx

    def tiny(model_type):
        return AutoModelForCausalLM.from_config(
            AutoConfig.for_model(
                model_type, vocab_size=64, hidden_size=16, intermediate_size=32,
                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            )
        )  # fmt: skip

    assert not reads_seq_idx(tiny("llama"))
    assert not reads_seq_idx(tiny("qwen3"))
    hybrid = AutoConfig.for_model(
        "inkling2_text", vocab_size=64, unpadded_vocab_size=64, hidden_size=16,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        swa_num_attention_heads=2, swa_num_key_value_heads=1, swa_head_dim=8,
        sliding_window_size=16, d_rel=4, rel_extent=16, moe_intermediate_size=8,
        n_routed_experts=2, num_experts_per_tok=1, n_layers_per_attn_res_block=1,
    )  # fmt: skip
    assert reads_seq_idx(AutoModelForCausalLM.from_config(hybrid))  # short convolutions
