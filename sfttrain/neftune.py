"""NEFTune on packed rows, scaled per example (Jain et al. 2023: uniform noise in
[-1, 1] * alpha / sqrt(L * d) on the input embeddings, L the example's length, d the width).

transformers' (and TRL's) hook takes L from the input's shape: on a packed [1, T] micro-batch that
is T, the whole micro-batch, so the noise is sqrt(T / L) times too weak and changes with
--batch-tokens. Here each token's L is the length of its own example, from the micro-batch's
cu_seq_lens, which the trainer hands to the hook before each forward.

    cu_seq_lens [0, 3, 5]  ->  L per token [3, 3, 3, 2, 2]
"""

from __future__ import annotations

import torch


class PackedNeftune:
    """A forward hook on the input embeddings, and the segment bounds of the current micro-batch."""

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.cu_seq_lens: torch.Tensor | None = None
        """Set by the trainer before each training forward (collator's cu_seq_lens_q)."""

    def __call__(self, module, args, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        tokens, width = output.shape[-2], output.shape[-1]
        bounds = self.cu_seq_lens
        if bounds is None or int(bounds[-1]) != tokens:
            lengths = torch.full((tokens,), tokens, device=output.device)
        else:
            bounds = bounds.to(output.device, torch.long)
            sizes = bounds[1:] - bounds[:-1]
            lengths = torch.repeat_interleave(sizes, sizes)
        scale = self.alpha / torch.sqrt(lengths.to(torch.float32) * width)
        noise = torch.empty_like(output).uniform_(-1, 1) * scale[:, None].to(output.dtype)
        return output + noise


def add_packed_neftune(model, alpha: float) -> PackedNeftune:
    """Register per-example NEFTune on the model's input embeddings; return the hook."""
    hook = PackedNeftune(alpha)
    model.get_input_embeddings().register_forward_hook(hook)
    return hook
