"""Packed sdpa (sfttrain/packed_sdpa.py): sdpa on each packed example equals transformers' sdpa
with its dense block-causal mask, logits and gradients, on every architecture it is chosen for,
and never makes a [T, T] tensor; where it would not be exact, sdpa keeps the dense mask."""

import copy
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import pack, write_build
from torch.utils._python_dispatch import TorchDispatchMode

import sfttrain
from sfttrain import packed_sdpa
from sfttrain.collator import collate_padding_free
from sfttrain.model_loading import DENSE_MASK, causal_lm_class, resolve_attn

VOCAB = 300
LENGTHS = (17, 32, 5, 23)
"""Four examples of different lengths; T = 77 is no other dimension of the tiny models."""
TOTAL = sum(LENGTHS)


def tiny_config(model_type: str, kv_heads: int = 2, **overrides):
    from transformers import AutoConfig

    values = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=8,
        max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return AutoConfig.for_model(model_type, **{**values, **overrides})


def tiny_model(config, attn: str):
    """A random-init model in training mode; the same weights for the same config and seed. The
    config is copied: from_config sets attn_implementation on the config object it is given."""
    from transformers import AutoModelForCausalLM

    if attn == packed_sdpa.NAME:
        packed_sdpa.register()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=attn).train()


def packed_batch(lengths=LENGTHS):
    rng = np.random.default_rng(1)
    row = pack(*[rng.integers(3, VOCAB, n).tolist() for n in lengths])
    return collate_padding_free([{k: np.asarray(v) for k, v in row.items()}])


@contextmanager
def sdpa_calls():
    """Record (query length, attn_mask shape or None, is_causal) of every sdpa call."""
    calls, real = [], torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, **kwargs):
        shape = None if attn_mask is None else tuple(attn_mask.shape)
        calls.append((query.shape[2], shape, kwargs.get("is_causal", False)))
        return real(query, key, value, attn_mask=attn_mask, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        yield calls
    finally:
        torch.nn.functional.scaled_dot_product_attention = real


def logits_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach()[0], {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("model_type", "kv_heads"),
    [(t, 2) for t in sorted(packed_sdpa.PACKED_ARCHITECTURES)] + [("llama", 4)],
)
def test_logits_and_gradients_equal_the_dense_mask(model_type, kv_heads):
    config, batch = tiny_config(model_type, kv_heads), packed_batch()
    assert packed_sdpa.packed_problem(config, TOTAL) is None
    with sdpa_calls() as dense_calls:
        dense_logits, dense_grads = logits_and_grads(tiny_model(config, "sdpa"), batch)
    packed = tiny_model(config, packed_sdpa.NAME)
    with sdpa_calls() as packed_calls:
        logits, grads = logits_and_grads(packed, batch)
    assert {shape for _, shape, _ in dense_calls} == {(1, 1, TOTAL, TOTAL)}, "guard: dense mask"
    layers = config.num_hidden_layers
    assert packed_calls == [(n, None, True) for n in LENGTHS] * layers, "one causal call each"
    torch.testing.assert_close(logits, dense_logits, rtol=0, atol=1e-6)
    for name, grad in dense_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)
    before_attention = [n for n in grads if "layers.0.self_attn" in n and "o_proj" not in n]
    assert all(grads[n].abs().sum() > 0 for n in before_attention), "guard: q, k, v get grads"
    starts = np.cumsum((0,) + LENGTHS)
    with torch.no_grad():
        for start, n in zip(starts, LENGTHS):
            alone = packed(input_ids=batch["input_ids"][:, start : start + n]).logits[0]
            torch.testing.assert_close(logits[start : start + n], alone, rtol=0, atol=1e-6)


def test_the_whole_sequence_is_no_control_for_isolation():
    """Control: the same ids as one sequence give other logits, so the checks above can fail."""
    model, batch = tiny_model(tiny_config("llama"), packed_sdpa.NAME), packed_batch()
    with torch.no_grad():
        packed = model(**batch).logits
        whole = model(input_ids=batch["input_ids"]).logits
    assert (packed - whole)[0, LENGTHS[0] :].abs().max() > 1e-2


class SquareTensors(TorchDispatchMode):
    """Record the shape of every tensor an op makes whose last two dimensions are both `size`."""

    def __init__(self, size: int):
        super().__init__()
        self.size, self.seen = size, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tuple(tensor.shape[-2:]) == (self.size,) * 2:
                self.seen.append((str(func), tuple(tensor.shape)))
        return out


@pytest.mark.parametrize("attn", ["sdpa", packed_sdpa.NAME])
def test_no_tokens_by_tokens_tensor_is_made(attn):
    model, batch = tiny_model(tiny_config("qwen3"), attn), packed_batch()
    with sdpa_calls() as calls, SquareTensors(TOTAL) as square:
        model(**batch).loss.backward()
    masks = [shape for _, shape, _ in calls if shape is not None]
    if attn == "sdpa":
        assert square.seen and masks, "control: transformers' sdpa builds a dense [T, T] mask"
    else:
        assert square.seen == [] and masks == [], "the packed kernel makes no [T, T] tensor"
        assert len(calls) == len(LENGTHS) * 2, "guard: the spy saw the kernel's calls"


def test_batches_without_cu_seq_lens_are_exact():
    config = tiny_config("mistral")
    model, dense = tiny_model(config, packed_sdpa.NAME), tiny_model(config, "sdpa")
    batch = packed_batch()
    plain = {k: v for k, v in batch.items() if not k.startswith(("cu_seq_lens", "max_length"))}
    two_rows = {"input_ids": batch["input_ids"][:, :64].reshape(2, 32)}
    with torch.no_grad():
        reference = model(**batch).logits
        # an eval or probe batch without cu_seq_lens: bounds from where position_ids restart
        assert torch.equal(model(**plain).logits, reference)
        # no position_ids either, or two rows of one example each: causal over each whole row
        for inputs in ({"input_ids": batch["input_ids"]}, two_rows):
            torch.testing.assert_close(
                model(**inputs).logits, dense(**inputs).logits, rtol=0, atol=1e-6
            )


def test_what_it_cannot_compute_exactly_is_refused():
    model, batch = tiny_model(tiny_config("llama"), packed_sdpa.NAME), packed_batch()
    padded = {"input_ids": batch["input_ids"][:, :20].reshape(2, 10)}
    padded["attention_mask"] = torch.ones(2, 10, dtype=torch.long)
    padded["attention_mask"][1, 7:] = 0
    with torch.no_grad(), pytest.raises(ValueError, match="takes padding-free batches"):
        model(**padded)
    wrong = dict(batch, cu_seq_lens_q=torch.tensor([0, 5, 50], dtype=torch.int32))
    with torch.no_grad(), pytest.raises(ValueError, match=r"must run from 0 to .* 77"):
        model(**wrong)
    q = torch.randn(1, 4, 1, 8)
    kv = torch.randn(1, 4, 6, 8)
    with pytest.raises(ValueError, match="without a KV cache"):
        packed_sdpa.packed_sdpa_forward(torch.nn.Module(), q, kv, kv, None)
    with pytest.raises(ValueError, match="does not apply `softcap`"):
        packed_sdpa.packed_sdpa_forward(torch.nn.Module(), kv, kv, kv, None, softcap=30.0)
    with pytest.raises(ValueError, match="does not apply `s_aux`"):
        packed_sdpa.packed_sdpa_forward(torch.nn.Module(), kv, kv, kv, None, s_aux=kv)
    windowed = tiny_model(tiny_config("mistral", sliding_window=16), packed_sdpa.NAME)
    with torch.no_grad(), pytest.raises(ValueError, match="32 tokens is longer than the sliding"):
        windowed(**batch)


def test_dropout_is_applied_per_example_and_stays_inside_it():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 12, 8) for _ in range(3))
    cuts = torch.tensor([0, 5, 12], dtype=torch.int32)

    def attend(q, dropout):
        torch.manual_seed(1)
        module = torch.nn.Module()
        return packed_sdpa.packed_sdpa_forward(module, q, k, v, None, dropout, cu_seq_lens_q=cuts)[
            0
        ]

    kept, dropped = attend(q, 0.0), attend(q, 0.5)
    assert (kept - dropped).abs().max() > 1e-2, "dropout is applied"
    other = q.clone()
    other[:, :, :5] = torch.randn(1, 4, 5, 8)
    assert torch.equal(attend(other, 0.5)[0, 5:], dropped[0, 5:]), "the first example stays apart"
    assert not torch.equal(attend(other, 0.5)[0, :5], dropped[0, :5]), "control"


def test_resolve_attn_picks_the_packed_kernel_only_where_it_is_exact():
    def resolved(name, config, longest=64):
        return resolve_attn(name, torch.float32, causal_lm_class(config), config, longest)

    packed = packed_sdpa.NAME
    for model_type in sorted(packed_sdpa.PACKED_ARCHITECTURES):
        assert resolved("sdpa", tiny_config(model_type))[0] == packed, model_type
        assert resolved("auto", tiny_config(model_type))[0] == packed, model_type
    attn, why = resolved("sdpa-dense", tiny_config("llama"))
    assert (attn, why) == ("sdpa", "asked for with --attn sdpa-dense: " + DENSE_MASK)
    assert resolved("sdpa", tiny_config("mistral", sliding_window=64))[0] == packed, "window = T"
    attn, why = resolved("sdpa", tiny_config("mistral", sliding_window=16))
    assert attn == "sdpa" and "sliding window of 16 tokens is shorter than --batch-tokens 64" in why
    qwen2 = {"use_sliding_window": True, "sliding_window": 16}
    windowed_layers = tiny_config("qwen2", **qwen2, max_window_layers=1)
    assert windowed_layers.layer_types == ["full_attention", "sliding_attention"], "guard"
    assert resolved("auto", windowed_layers)[0] == "sdpa", "a sliding layer"
    assert resolved("auto", tiny_config("qwen2", **qwen2, max_window_layers=2))[0] == packed
    assert resolved("auto", tiny_config("qwen2", sliding_window=16))[0] == packed, "window off"
    attn, why = resolved("auto", tiny_config("gemma3_text"))
    assert attn == "sdpa" and "not known to be exact for gemma3_text" in why
    assert resolve_attn("sdpa", torch.float32)[0] == "sdpa", "no config: the dense mask"


def train_twice(tmp_path, base_config, capsys, model_dir):
    """Six steps with --attn sdpa, then with --attn sdpa-dense, on rows packing three sentences
    of 9, 16 and 23 tokens (one row per micro-batch): (losses, stderr) of each."""
    rng = np.random.default_rng(0)
    sentences = [rng.integers(3, 512, n).tolist() for n in (9, 16, 23)]
    rows = [pack(*(sentences[(i + j) % 3] for j in range(3))) for i in range(6)]
    data = write_build(tmp_path / "b", rows, eval_rows=rows[:2])
    runs = []
    for attn in ("sdpa", "sdpa-dense"):
        config = {**base_config, "data": str(data), "model": str(model_dir), "attn": attn,
                  "max_steps": 6, "loss_chunk_tokens": 16, "output_dir": str(tmp_path / attn)}  # fmt: skip
        result = sfttrain.train(config)
        losses = [result.first_loss, result.last_loss, result.metrics["eval_loss"]]
        runs.append((losses, capsys.readouterr().err))
    return runs


def test_training_with_the_packed_kernel_matches_the_dense_mask(tmp_path, base_config, capsys):
    (packed, packed_err), (dense, dense_err) = train_twice(
        tmp_path, base_config, capsys, base_config["model"]
    )
    assert (
        "attention: sdpa_packed (asked for with --attn; sdpa on each packed example" in packed_err
    )
    assert "attention: sdpa (asked for with --attn sdpa-dense" in dense_err
    for err in (packed_err, dense_err):
        assert "isolation: packed examples stay apart" in err
        assert "loss: chunks of 16 tokens" in err
    assert packed == pytest.approx(dense, rel=1e-5, abs=1e-6)
    assert packed[1] < packed[0] - 0.5, "guard: it trains"
    assert "sdpa_packed" not in (tmp_path / "sdpa" / "config.json").read_text(), "loads anywhere"


def test_a_short_sliding_window_keeps_the_dense_mask_and_says_so(tmp_path, base_config, capsys):
    model_dir = tmp_path / "mistral"
    tiny_config("mistral", sliding_window=16, vocab_size=512).save_pretrained(model_dir)
    (windowed, err), (dense, _) = train_twice(tmp_path, base_config, capsys, model_dir)
    assert (
        "attention: sdpa (asked for with --attn; transformers' sdpa with a dense [T, T] "
        "block-causal mask: its sliding window of 16 tokens is shorter than --batch-tokens 48"
    ) in err
    assert windowed == dense, "both ran transformers' sdpa"
