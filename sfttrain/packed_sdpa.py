"""Packed sdpa: torch's scaled_dot_product_attention run on each packed example, no [T, T] mask.

With `attn_implementation="sdpa"` and a padding-free `[1, T]` batch, transformers sees the
position_ids restart and builds a dense boolean block-causal mask of T x T elements (268M at
16k tokens, per forward), and a mask rules out sdpa's flash and memory-efficient backends on a
GPU. Here, attention runs on each example's slice with `is_causal=True` instead: the same
attention, since a token of one example may attend only to earlier tokens of its own example.

Worked example, cu_seq_lens_q = [0, 3, 5] (examples of 3 and 2 tokens, T = 5):

    out[:, :, 0:3] = sdpa(q[:, :, 0:3], k[:, :, 0:3], v[:, :, 0:3], is_causal=True)
    out[:, :, 3:5] = sdpa(q[:, :, 3:5], k[:, :, 3:5], v[:, :, 3:5], is_causal=True)

The largest score matrix is then L x L for the longest example L, never T x T. Example bounds
come from `cu_seq_lens_q` (the collator's), else from where position_ids restart (the rule
transformers' own packed mask uses), else the whole row is one sequence. They are read to the
host once per forward (one slot remembers the tensor they came from), not once per layer.

Registered under NAME with transformers' AttentionInterface, and with AttentionMaskInterface as
a mask function that builds nothing: for a padding-free batch it returns None, and a 2D padding
mask is handed through so that the kernel refuses it (without a registered mask function
transformers would drop the padding mask silently). Exact only on architectures whose attention
is plain causal softmax attention (PACKED_ARCHITECTURES, each read in transformers' modeling
files and tested equal to the dense mask): no soft-capping, no attention sinks, no position
bias, and no sliding window shorter than an example. `packed_problem` says, before the model
loads, why a model is not one of them (it then keeps transformers' sdpa); the kernel itself
refuses anything else it is handed, so it can never silently differ from the dense mask.
Attention dropout (the module's attention_dropout, in training) is applied per example: the
same distribution as the dense kernel's, other random draws.
"""

from __future__ import annotations

import weakref

import torch

NAME = "sdpa_packed"
"""The attn_implementation name (it contains "sdpa", so transformers checks _supports_sdpa)."""

PACKED_ARCHITECTURES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2"})
"""config.model_type of the causal LMs whose attention is causal softmax(q k^T * scaling) v with
no soft-capping, sinks or bias, so per-example causal sdpa equals the dense block-causal mask."""

WINDOWED_ARCHITECTURES = frozenset({"mistral", "qwen2", "qwen3", "phi3", "smollm3"})
"""Those of them that apply config.sliding_window (on layers of type sliding_attention, where
the config has layer_types); llama and olmo2 have no sliding window."""

UNSUPPORTED_KWARGS = ("softcap", "s_aux", "sinks", "position_bias")
"""Attention keywords that change the scores: the per-example kernel refuses them."""


def register() -> None:
    """Make NAME a transformers attention implementation (safe to call again)."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(NAME, packed_sdpa_forward)
    AttentionMaskInterface.register(NAME, padding_mask_only)


def active_sliding_window(model_config) -> int | None:
    """The sliding window this model's attention applies somewhere, or None."""
    if getattr(model_config, "model_type", None) not in WINDOWED_ARCHITECTURES:
        return None
    window = getattr(model_config, "sliding_window", None)
    layer_types = getattr(model_config, "layer_types", None)
    if window is None or (layer_types is not None and "sliding_attention" not in layer_types):
        return None
    return int(window)


def packed_problem(model_config, longest_example: int | None) -> str | None:
    """Why per-example sdpa would not be exact for this model with examples of up to
    `longest_example` tokens (None: unknown), or None when it is exact."""
    model_type = getattr(model_config, "model_type", None)
    if model_type not in PACKED_ARCHITECTURES:
        return f"per-example sdpa is not known to be exact for {model_type}"
    if not getattr(model_config, "is_causal", True):
        return "the config makes attention bidirectional (is_causal: false)"
    window = active_sliding_window(model_config)
    if window is not None and (longest_example is None or window < longest_example):
        longer = "" if longest_example is None else f" than --batch-tokens {longest_example}"
        return (
            f"its sliding window of {window} tokens is shorter{longer}, so a long example needs "
            "the window in the mask"
        )
    return None


def padding_mask_only(
    batch_size: int, q_length: int, kv_length: int, attention_mask=None, **kwargs
) -> torch.Tensor | None:
    """The mask function registered for NAME: no mask at all for a padding-free batch; a 2D
    attention_mask with padding is passed on as it is, for the kernel to refuse."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask


def packed_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query [B, H, T, D], key and value
    [B, H_kv, T, D]; returns ([B, T, H, D], None) like sdpa_attention_forward."""
    _refuse_inexact(module, query, key, attention_mask, kwargs)
    bounds = example_bounds(kwargs.get("cu_seq_lens_q"), kwargs.get("position_ids"), query)
    longest = max(end - start for row in bounds for start, end in row)
    if sliding_window is not None and longest > sliding_window:
        raise ValueError(
            f"{NAME}: an example of {longest} tokens is longer than the sliding window of "
            f"{sliding_window} tokens, which per-example causal sdpa cannot apply; load the model "
            "with attn_implementation='sdpa' (sfttrain: --attn sdpa-dense)"
        )
    extra = {}
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        if key.shape[-1] == value.shape[-1] <= 256:  # what sdpa's fused GQA kernels take
            extra["enable_gqa"] = True
        else:
            key = key.repeat_interleave(groups, dim=1)
            value = value.repeat_interleave(groups, dim=1)

    def attend(b: slice, t: slice) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(
            query[b, :, t], key[b, :, t], value[b, :, t],
            dropout_p=dropout, is_causal=True, scale=scaling, **extra,
        )  # fmt: skip

    everything = slice(None)
    if all(row == [(0, query.shape[2])] for row in bounds):
        out = attend(everything, everything)  # no packing: one call for the whole batch
    else:
        rows = [
            torch.cat([attend(slice(b, b + 1), slice(s, e)) for s, e in row], dim=2)
            for b, row in enumerate(bounds)
        ]
        out = torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def _refuse_inexact(module, query, key, attention_mask, kwargs) -> None:
    """Raise ValueError for anything per-example causal sdpa would not compute exactly."""
    problems = [f"`{name}`" for name in UNSUPPORTED_KWARGS if kwargs.get(name) is not None]
    if problems:
        raise ValueError(
            f"{NAME} does not apply {', '.join(problems)} (it changes the attention scores); "
            "load the model with attn_implementation='sdpa' or 'eager' (sfttrain: --attn sdpa-dense)"
        )
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    if not (causal and getattr(getattr(module, "config", None), "is_causal", True)):
        raise ValueError(
            f"{NAME} is causal attention only, and this layer is bidirectional: load the model "
            "with attn_implementation='sdpa'"
        )
    if attention_mask is not None:
        raise ValueError(
            f"{NAME} takes padding-free batches (no padding attention_mask, no custom mask; got a "
            f"{tuple(attention_mask.shape)} mask): pack the examples into one [1, T] row with "
            "position_ids restarting at 0 (or cu_seq_lens_q), or load the model with "
            "attn_implementation='sdpa'"
        )
    if query.shape[2] != key.shape[2]:
        raise ValueError(
            f"{NAME} is for training forwards without a KV cache ({query.shape[2]} queries, "
            f"{key.shape[2]} keys); to generate, switch with model.set_attn_implementation('sdpa')"
        )


class _LastBounds:
    """One slot: the tensor the bounds of the current forward came from, and those bounds. Every
    layer of a forward gets the same cu_seq_lens_q / position_ids tensor, so only the first layer
    copies it to the host (a device sync) instead of every layer."""

    def __init__(self):
        self.source = None
        self.key = None
        self.bounds = None

    def get(self, tensor: torch.Tensor, length: int):
        """The bounds put for this very tensor (not changed in place since) and length, or None."""
        if (
            self.source is not None
            and self.source() is tensor
            and self.key == (tensor._version, length)
        ):
            return self.bounds
        return None

    def put(self, tensor: torch.Tensor, length: int, bounds) -> None:
        self.source, self.key, self.bounds = weakref.ref(tensor), (tensor._version, length), bounds


_last = _LastBounds()


def example_bounds(
    cu_seq_lens: torch.Tensor | None, position_ids: torch.Tensor | None, query: torch.Tensor
) -> list[list[tuple[int, int]]]:
    """Per batch row, the (start, end) token range of each example: from cu_seq_lens (one row
    only), else where position_ids do not go up by exactly 1 (as transformers'
    find_packed_sequence_indices), else the whole row."""
    batch, length = query.shape[0], query.shape[2]
    source = cu_seq_lens if cu_seq_lens is not None else position_ids
    if source is None:
        return [[(0, length)]] * batch
    cached = _last.get(source, length)
    if cached is not None and len(cached) == batch:
        return cached
    if cu_seq_lens is not None:
        bounds = [_bounds_from_cu_seq_lens(cu_seq_lens, batch, length)]
    else:
        positions = position_ids.expand(batch, -1) if position_ids.shape[0] == 1 else position_ids
        bounds = [_bounds_from_positions(row, length) for row in positions]
    _last.put(source, length, bounds)
    return bounds


def _bounds_from_cu_seq_lens(cu_seq_lens, batch: int, length: int) -> list[tuple[int, int]]:
    cuts = cu_seq_lens.tolist()
    if (
        batch != 1
        or cuts[0] != 0
        or cuts[-1] != length
        or any(b <= a for a, b in zip(cuts, cuts[1:]))
    ):
        raise ValueError(
            f"{NAME}: cu_seq_lens_q must run from 0 to the sequence length {length} in increasing "
            f"steps over one [1, T] row; got {cuts[:8]}{'...' if len(cuts) > 8 else ''} for a "
            f"batch of {batch} rows"
        )
    return list(zip(cuts[:-1], cuts[1:]))


def _bounds_from_positions(positions: torch.Tensor, length: int) -> list[tuple[int, int]]:
    if positions.shape[-1] != length:
        raise ValueError(
            f"{NAME}: position_ids have {positions.shape[-1]} positions for {length} tokens"
        )
    starts = [0] + (torch.nonzero(positions[1:] - positions[:-1] != 1).flatten() + 1).tolist()
    return list(zip(starts, starts[1:] + [length]))
