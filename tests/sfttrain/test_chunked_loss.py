"""Chunked cross-entropy (sfttrain/chunked_loss.py): the model's own loss and gradients, without
ever holding the [tokens, vocab] logits, on every architecture it is turned on for."""

import numpy as np
import pytest
import torch
from conftest import pack, random_rows, write_build

import sfttrain
from sfttrain.chunked_loss import EXACT_ARCHITECTURES, add_chunked_loss
from sfttrain.collator import collate_padding_free

VOCAB = 300


def tiny_model(model_type: str, attn: str = "sdpa"):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type, vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).train()


def packed_batch():
    rng = np.random.default_rng(1)
    masks = ([0] * 10 + [1] * 7, [0] * 30 + [1] * 2, [0] * 3 + [1] * 20)  # a chunk of prompt only
    row = pack(*[(rng.integers(3, VOCAB, len(m)).tolist(), m) for m in masks])
    return collate_padding_free([{k: np.asarray(v) for k, v in row.items()}])


def loss_and_grads(model, batch, **loss_kwargs):
    model.zero_grad()
    loss = model(**batch, **loss_kwargs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("model_type", sorted(EXACT_ARCHITECTURES))
@pytest.mark.parametrize("num_items", [None, 40])
def test_chunked_loss_and_gradients_equal_the_plain_ones(model_type, num_items):
    model, batch = tiny_model(model_type), packed_batch()
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    plain_loss, plain_grads = loss_and_grads(model, batch, **kwargs)
    state, status = add_chunked_loss(model, chunk_tokens=7, sharded=False)
    assert state is not None, status
    assert torch.equal(loss_and_grads(model, batch, **kwargs)[0], plain_loss), "inactive: plain"
    with state.training_loss():
        loss, grads = loss_and_grads(model, batch, **kwargs)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-7)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert model.get_output_embeddings().weight.grad.abs().sum() > 0, "guard: the head is trained"


def largest_saved_tensor(model, batch, state=None) -> int:
    """numel of the largest tensor autograd keeps for the backward pass of one training loss."""
    sizes = []

    def keep(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        if state is None:
            model(**batch).loss.backward()
        else:
            with state.training_loss():
                model(**batch).loss.backward()
    return max(sizes)


def test_the_full_logits_are_never_kept():
    model, batch = tiny_model("llama"), packed_batch()
    tokens = batch["input_ids"].shape[1]
    assert largest_saved_tensor(model, batch) >= tokens * VOCAB, (
        "control: the plain loss keeps them"
    )
    state, _ = add_chunked_loss(model, chunk_tokens=8, sharded=False)
    assert largest_saved_tensor(model, batch, state) < tokens * VOCAB / 4


def test_off_where_it_would_not_be_exact():
    assert add_chunked_loss(tiny_model("llama"), 0, sharded=False)[0] is None
    assert add_chunked_loss(tiny_model("llama"), 64, sharded=True) == (
        None,
        "off under FSDP/DeepSpeed (plain loss)",
    )
    state, status = add_chunked_loss(
        tiny_model("gemma2", "eager"), 64, sharded=False
    )  # soft-capping
    assert state is None and "not known to be exact for gemma2" in status


def test_a_run_trains_the_same_with_and_without_chunks(tmp_path, base_config, capsys):
    data = write_build(tmp_path / "b", random_rows(6, 64), eval_rows=random_rows(2, 64, seed=1))
    config = {**base_config, "data": str(data), "max_steps": 3, "logging_steps": 1}
    chunked = sfttrain.train({**config, "loss_chunk_tokens": 16})
    assert "loss: chunks of 16 tokens" in capsys.readouterr().err
    plain = sfttrain.train(
        {**config, "loss_chunk_tokens": 0, "output_dir": str(tmp_path / "plain")}
    )
    assert "loss: off (--loss-chunk-tokens 0)" in capsys.readouterr().err
    assert chunked.last_loss == pytest.approx(plain.last_loss, rel=1e-5)
    assert chunked.metrics["eval_loss"] == pytest.approx(plain.metrics["eval_loss"], rel=1e-5)
