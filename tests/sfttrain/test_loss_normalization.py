"""Gradient accumulation must not change the gradient: 4 micro-batches x 1 row == 1 x 4 rows.

The rows have very uneven loss-token counts, so a mean of per-micro-batch means (the classic
accumulation bug) gives a different gradient; the test checks that too, so it can fail.
"""

import numpy as np
import pytest
import torch
from conftest import example, pack, write_build
from transformers import TrainerCallback, set_seed

from schemas import INPUT_IDS, LOSS_MASK, SEQ_LENS
from sfttrain.collator import collate_padding_free
from sfttrain.config import load_config
from sfttrain.model_loading import load_model
from sfttrain.training import prepare

LENGTH = 32
LOSS_TOKENS = (31, 2, 16, 5)  # per row


def _rows():
    rows = []
    for i, n in enumerate(LOSS_TOKENS):
        ids = [(7 * i + 3 * t) % 500 + 3 for t in range(LENGTH)]
        rows.append(pack(example(ids, [0] + [1] * n + [0] * (LENGTH - 1 - n)), first_id=i))
    return rows


class GradCapture(TrainerCallback):
    """Copies the gradients just before the first optimizer step."""

    grads: dict | None = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is None:
            self.grads = {
                n: p.grad.detach().clone()
                for n, p in model.named_parameters()
                if p.grad is not None
            }


def _grads(tmp_path, base_config, batch_tokens, grad_accum, **extra):
    config = load_config(
        overrides={
            **base_config,
            **extra,
            "data": str(tmp_path / "b"),
            "output_dir": str(tmp_path / f"run{grad_accum}"),
            "batch_tokens": batch_tokens,
            "grad_accum": grad_accum,
            "max_steps": 1,
            "training_args": {
                **base_config["training_args"],
                "max_grad_norm": 0.0,
                "save_strategy": "no",
            },
        }
    )
    capture = GradCapture()
    run = prepare(config, callbacks=[capture])
    assert len(run.trainer.get_train_dataloader()) == grad_accum  # micro-batches in the one step
    run.trainer.train()
    return capture.grads, config


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_accumulation_gives_the_same_gradient(tmp_path, base_config, mode):
    write_build(tmp_path / "b", _rows())
    extra = {"lora_r": 4, "lora_dropout": 0.0} if mode == "lora" else {}
    one_by_four, _ = _grads(tmp_path, base_config, batch_tokens=4 * LENGTH, grad_accum=1, **extra)
    four_by_one, _ = _grads(tmp_path, base_config, batch_tokens=LENGTH, grad_accum=4, **extra)
    assert one_by_four.keys() == four_by_one.keys() and len(one_by_four) > 5
    assert all(g.abs().max() > 0 for n, g in one_by_four.items() if "lora_B" in n or mode == "full")
    for name in one_by_four:
        torch.testing.assert_close(four_by_one[name], one_by_four[name], rtol=1e-4, atol=1e-7)


def test_control_mean_of_means_differs(tmp_path, base_config):
    """The comparison above can fail: a mean of per-row means gives another gradient here."""
    write_build(tmp_path / "b", _rows())
    one_by_four, config = _grads(tmp_path, base_config, batch_tokens=4 * LENGTH, grad_accum=1)
    set_seed(config.seed)
    model = load_model(config, torch.float32, "sdpa")
    losses = [
        model(
            **collate_padding_free([{c: np.array(r[c]) for c in (INPUT_IDS, LOSS_MASK, SEQ_LENS)}])
        ).loss
        for r in _rows()
    ]
    torch.stack(losses).mean().backward()
    naive = {n: p.grad for n, p in model.named_parameters()}
    worst = max(
        ((naive[n] - g).abs().max() / g.abs().max().clamp_min(1e-12)).item()
        for n, g in one_by_four.items()
    )
    assert worst > 1e-2


def test_eval_loss_is_the_token_mean_over_micro_batches(tmp_path, base_config):
    """Eval over micro-batches of one row each (uneven loss tokens) equals the token mean of the
    summed cross-entropy computed row by row here; the mean of per-micro-batch means does not."""
    rows = _rows()
    data = write_build(tmp_path / "b", rows, eval_rows=rows)
    run = prepare(load_config(overrides={**base_config, "data": str(data), "batch_tokens": LENGTH}))
    metrics = run.trainer.evaluate()
    model = run.trainer.model.eval()
    sums, means, tokens, hits = 0.0, [], 0, 0
    with torch.no_grad():
        for row in rows:
            batch = collate_padding_free([{k: np.asarray(v) for k, v in row.items()}])
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
            target = batch["labels"][0, 1:]
            keep = target != -100
            loss = torch.nn.functional.cross_entropy(
                logits[0, :-1][keep], target[keep], reduction="sum"
            )
            sums, tokens = sums + loss.item(), tokens + int(keep.sum())
            hits += int((logits[0, :-1].argmax(-1)[keep] == target[keep]).sum())
            means.append(loss.item() / int(keep.sum()))
    assert metrics["eval_tokens"] == tokens == sum(LOSS_TOKENS)
    assert abs(metrics["eval_loss"] - sums / tokens) < 1e-5
    assert abs(metrics["eval_token_accuracy"] - hits / tokens) < 1e-9
    assert abs(np.mean(means) - sums / tokens) > 1e-3, "the control: a mean of means differs"
