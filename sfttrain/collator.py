"""Padding-free collation: a micro-batch of rows becomes one [1, T] sequence the model can read.

Worked example, two rows: [5, 6, 7 | 8, 9] (seq_lens [3, 2], loss_mask [0, 1, 1, 0, 1]) and [4, 3]
(seq_lens [2], loss_mask [0, 1]) give

    input_ids    = [[5, 6, 7, 8, 9, 4, 3]]
    labels       = [[-100, 6, 7, -100, 9, -100, 3]]    # where(loss_mask, input_ids, -100), unshifted
    position_ids = [[0, 1, 2, 0, 1, 0, 1]]              # restart at every example
    cu_seq_lens_q = cu_seq_lens_k = [0, 3, 5, 7]         # int32, for flash-attention's varlen kernel
    max_length_q = max_length_k = 3

No attention_mask: with it absent and position_ids restarting, transformers builds a block
causal mask (sdpa-dense, eager, flex) or uses cu_seq_lens (flash-attention), and sfttrain's packed
sdpa runs attention on each example's slice (packed_sdpa.py), so no token attends across examples. `use_cache=False` is part of the batch, because with a KV cache transformers
skips that packed-sequence detection and examples silently attend to each other
(DESIGN.md, "A KV cache silently breaks isolation"). Labels are shifted once, by the model; the
contract puts loss_mask 0 on every example's first token, so no example learns to predict the
next one's first token.
"""

from __future__ import annotations

import numpy as np
import torch

from schemas import INPUT_IDS, LOSS_MASK, SEQ_LENS
from sfttrain.errors import SfttrainError

IGNORE_INDEX = -100
MODEL_INPUT_IDS = (
    "input_ids"  # the keyword transformers models take; same word as the column, other contract
)


def collate_padding_free(
    rows: list[dict[str, np.ndarray]], seq_idx: bool = False
) -> dict[str, torch.Tensor | int | bool]:
    """Concatenate rows (dicts of numpy arrays, as PackedRows yields them) into one model batch;
    `seq_idx`: also give each token its example's index in the batch (int32 [1, T], see
    `reads_seq_idx`)."""
    ids = np.concatenate([r[INPUT_IDS] for r in rows]).astype(np.int64)
    mask = np.concatenate([r[LOSS_MASK] for r in rows])
    seq_lens = np.concatenate([r[SEQ_LENS] for r in rows]).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(seq_lens)[:-1]])
    if seq_lens.sum() != ids.size or mask.size != ids.size or (seq_lens <= 0).any():
        raise SfttrainError(
            f"a micro-batch has {ids.size} input_ids, {mask.size} loss_mask values and seq_lens {seq_lens.tolist()[:8]}: "
            "they must agree (the build breaks the shard contract): rebuild with `sftprep build`"
        )
    if mask[starts].any():
        raise SfttrainError(
            "loss_mask is 1 on the first token of an example, which would train across example boundaries "
            "(the build breaks the shard contract): rebuild with `sftprep build`"
        )
    positions = np.arange(ids.size) - np.repeat(starts, seq_lens)
    labels = np.where(mask.astype(bool), ids, IGNORE_INDEX)
    cu_seq_lens = torch.from_numpy(np.concatenate([[0], np.cumsum(seq_lens)]).astype(np.int32))
    longest = int(seq_lens.max())
    extra = {}
    if seq_idx:
        extra["seq_idx"] = torch.from_numpy(
            np.repeat(np.arange(seq_lens.size, dtype=np.int32), seq_lens)
        )[None]
    return {
        MODEL_INPUT_IDS: torch.from_numpy(ids)[None],
        "labels": torch.from_numpy(labels)[None],
        "position_ids": torch.from_numpy(positions)[None],
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": longest,
        "max_length_k": longest,
        "use_cache": False,
        **extra,
    }


def reads_seq_idx(model) -> bool:
    """Whether the model's code reads a `seq_idx` keyword: the per-token example index that the
    short-convolution and state-space kernels of hybrid models (Zamba, Inkling2; causal-conv1d,
    mamba_ssm) restart at. transformers' reference PyTorch versions of those kernels refuse a
    `seq_idx` ("can't keep packed sequences apart without causal_conv1d"), and without one the
    installed kernels let an example's state flow into the next, so the isolation probe proves
    either way what a run gets. Read from the source of the model's module (its Kwargs type
    names the keyword); other models never see the key."""
    import inspect
    import sys

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    module = sys.modules.get(type(base).__module__)
    try:
        return module is not None and "seq_idx" in inspect.getsource(module)
    except (OSError, TypeError):
        return False
