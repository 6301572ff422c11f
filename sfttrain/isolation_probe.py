"""Before training: prove on the loaded model that packed examples do not see each other.

Attention layers keep packed examples apart through position_ids / cu_seq_lens. Recurrent,
state-space and linear-attention layers (Mamba, gated delta nets, as in Falcon-H1, Nemotron-H,
Qwen3-Next) carry a state along the sequence; without a kernel that restarts it at every
example (a `seq_idx` or `cu_seq_lens` aware one) the state of one example flows into the next,
silently. Measured on CPU with transformers' reference kernels: a tiny Nemotron-H changes the
second example's logits by 0.59 (of 0.63) when only the first example changes, Falcon-H1 by 0.004,
while Llama, Qwen3, Gemma2 and LFM2 (attention) change them by exactly 0.

The probe runs the model (eval mode, no gradient, the training dtype and kernel) on two packed
micro-batches [A, B] and [A', B] that differ only in the first example's ids, and compares B's
logits: an isolating model gives the same logits (no kernel reads the other example), so any
difference above a thousandth of their scale is a leak and the run is refused, in one line.
"""

from __future__ import annotations

import numpy as np
import torch

from schemas import INPUT_IDS, LOSS_MASK, SEQ_LENS
from sfttrain.errors import SfttrainError

FIRST, SECOND = 13, 19
"""Lengths of the two probe examples (short: two forwards of 32 tokens)."""
TOLERANCE = 1e-3
"""Largest allowed change of B's logits, relative to their largest magnitude."""


def check_packed_isolation(trainer, model_name: str, vocab: int) -> str:
    """Raise SfttrainError if the trainer's model lets one packed example change another's
    logits (or refuses packed rows); else return the status line. Probe ids are drawn below
    `vocab` (one past the build's largest id, so rows of the embeddings) and 1000."""
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return "skipped under FSDP/DeepSpeed (the model is sharded only once training starts)"
    model = trainer.model
    rng = np.random.default_rng(0)
    first, other, second = (
        rng.integers(min(3, vocab - 1), min(vocab, 1000), n) for n in (FIRST, FIRST, SECOND)
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), trainer.compute_loss_context_manager():
            seen = [_second_logits(trainer, model, a, second) for a in (first, other)]
    except (ValueError, RuntimeError, NotImplementedError) as err:
        raise SfttrainError(
            f"--model {model_name} cannot train on packed rows: {str(err).splitlines()[0]}"
        ) from None
    finally:
        model.train(was_training)
    change = (seen[0] - seen[1]).abs().max().item()
    scale = seen[0].abs().max().item()
    if not change <= TOLERANCE * max(scale, 1e-6):
        raise SfttrainError(
            f"--model {model_name} lets packed examples see each other: changing one example "
            f"changed the next one's logits by {change:.3g} (of {scale:.3g}); its recurrent or "
            "linear-attention layers need a kernel that restarts at every example: install the "
            "one its model card names (mamba_ssm, causal-conv1d, flash-linear-attention)"
        )
    return f"packed examples stay apart (changing one moved the next one's logits by {change:.1g})"


def _second_logits(trainer, model, first: np.ndarray, second: np.ndarray) -> torch.Tensor:
    ids = np.concatenate([first, second])
    row = {
        INPUT_IDS: ids,
        LOSS_MASK: np.zeros(ids.size, dtype=np.int8),
        SEQ_LENS: np.array([first.size, second.size]),
    }
    batch = trainer._prepare_inputs(trainer.data_collator([row]))  # the run's own collation
    batch.pop("labels", None)
    return model(**batch).logits[0, first.size :].float()
