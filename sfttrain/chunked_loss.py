"""Cross-entropy in chunks of tokens, so training never holds the full [T, vocab] logits.

A plain causal-LM forward materializes `lm_head(hidden)` for all T tokens, then an fp32 copy for
the loss, then their gradient: for Qwen3's 151,936-token vocabulary at T = 16,384 that is about
5 GB in bf16 plus 10 GB in fp32, plus 10 GB of gradient, more than the rest of a small model's
training state. Here, while our trainer computes a training loss, the LM head passes the final
hidden states through unchanged, and the model's loss function (replaced on the instance) runs the
head on `chunk_tokens` rows at a time under activation checkpointing: each chunk's logits exist
only while its summed cross-entropy is taken, and again in the backward pass. The result is the
model's own loss (same shift, same ignore_index, divided by num_items_in_batch, or by the count of
label tokens without it), up to float summation order.

Exact only where the model's forward is `logits = lm_head(hidden)` followed directly by
`loss_function(logits, labels, ...)`; architectures that change the logits in between (Gemma's
soft-capping, Granite's and Cohere's logit scaling) or add to the loss (MoE router losses) are not
in EXACT_ARCHITECTURES and keep the plain loss. Under FSDP or DeepSpeed (where the head's weights
may be sharded outside its own call) it stays off too. A hand-written module because the fused
kernels that do this (Liger's, Apple's cut-cross-entropy) are CUDA/Triton-only and not installed
here; on CPU and in tests this one is the reference.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils.checkpoint import checkpoint

from sfttrain.collator import IGNORE_INDEX

EXACT_ARCHITECTURES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2"})
"""config.model_type of the causal LMs whose forward is lm_head then loss_function, nothing else
(read in transformers' modeling files; each is tested equal to the plain loss)."""


class ChunkedLoss:
    """The state shared by the patched LM head and the patched loss function of one model."""

    def __init__(self, head: torch.nn.Module, chunk_tokens: int):
        self.head_forward = head.forward
        """The head's own forward (with any hook accelerate or peft put on it)."""
        self.chunk_tokens = chunk_tokens
        self.active = False
        """True only inside the trainer's training compute_loss: then the head returns its input."""

    @contextmanager
    def training_loss(self):
        """Within: the model's forward returns the chunked loss and, as `logits`, hidden states."""
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self.active else self.head_forward(hidden)

    def loss(self, logits, labels, vocab_size, num_items_in_batch=None, **kwargs):
        """The model's loss_function: chunked when active (`logits` are then hidden states)."""
        from transformers.loss.loss_utils import ForCausalLMLoss

        if not self.active:
            return ForCausalLMLoss(logits, labels, vocab_size, num_items_in_batch, **kwargs)
        target = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
        total = chunked_cross_entropy(
            self.head_forward, logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
            self.chunk_tokens,
        )  # fmt: skip
        if num_items_in_batch is None:
            return total / (target != IGNORE_INDEX).sum()
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch


def chunked_cross_entropy(
    head, hidden: torch.Tensor, target: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """Sum over tokens of cross_entropy(head(hidden).float(), target), `chunk_tokens` rows at a
    time; with gradients, each chunk's logits are recomputed in the backward pass, not kept."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        rows, labels = hidden[start : start + chunk_tokens], target[start : start + chunk_tokens]
        if not (labels != IGNORE_INDEX).any():
            continue  # nothing to learn here: skip the matmul (its gradient would be zero)
        if torch.is_grad_enabled():
            total = total + checkpoint(_summed, head, rows, labels, use_reentrant=False)
        else:
            total = total + _summed(head, rows, labels)
    return total


def _summed(head, rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = head(rows).float()
    return torch.nn.functional.cross_entropy(
        logits, labels.to(logits.device), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def add_chunked_loss(model, chunk_tokens: int, sharded: bool) -> tuple[ChunkedLoss | None, str]:
    """Patch the causal LM inside `model` (a peft wrapper too) for chunked training loss; return
    the state (None when it stays off) and why, for the status line."""
    if chunk_tokens == 0:
        return None, "off (--loss-chunk-tokens 0)"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = getattr(base.config, "model_type", None)
    if model_type not in EXACT_ARCHITECTURES:
        return None, f"off: not known to be exact for {model_type} (plain loss)"
    if sharded:
        return None, "off under FSDP/DeepSpeed (plain loss)"
    head = base.get_output_embeddings()
    state = ChunkedLoss(head, chunk_tokens)
    head.forward = state.head
    base.loss_function = state.loss
    return state, f"chunks of {chunk_tokens} tokens (the full logits never exist in training)"
