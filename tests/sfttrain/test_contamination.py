"""Packed examples must not see each other, through the trainer's real forward path.

The model comes from sfttrain's loader and the batch from its collator, and the forward is
SfttrainTrainer.compute_loss: whatever sets use_cache=False is part of what is tested (DESIGN.md,
"A KV cache silently breaks isolation"). Two controls show the comparison can fail.
"""

import numpy as np
import pytest
import torch
from conftest import pack, write_build

from sfttrain.collator import MODEL_INPUT_IDS, collate_padding_free
from sfttrain.config import load_config
from sfttrain.training import prepare

LENGTHS = (7, 12, 5)


def _packed_run(tmp_path, base_config, attn):
    rng = np.random.default_rng(0)
    examples = [rng.integers(3, 512, n).tolist() for n in LENGTHS]
    data = write_build(tmp_path / "b", [pack(*examples)])
    run = prepare(load_config(overrides={**base_config, "data": str(data), "attn": attn}))
    trainer = run.trainer
    trainer.model.eval()
    batch = trainer._prepare_inputs(collate_padding_free([run.build.train[0]]))
    return trainer, examples, batch


def _forward(trainer, batch):
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    return loss, outputs.logits[0]


def _alone(model, ids):
    ids = torch.tensor([ids])
    labels = ids.clone()
    labels[0, 0] = -100
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    return out.loss, out.logits[0]


def _worst_difference(packed_logits, alone_logits):
    starts = np.cumsum((0,) + LENGTHS)
    return max(
        (packed_logits[s:e] - a).abs().max().item()
        for s, e, a in zip(starts, starts[1:], alone_logits)
    )


@pytest.mark.parametrize("attn", ["sdpa", "sdpa-dense", "eager"])
def test_packed_logits_and_loss_equal_examples_alone(tmp_path, base_config, attn):
    trainer, examples, batch = _packed_run(tmp_path, base_config, attn)
    assert trainer.model.config.use_cache is False
    loss, packed = _forward(trainer, batch)
    alone = [_alone(trainer.model, ids) for ids in examples]
    assert packed.dtype == torch.float32
    assert _worst_difference(packed, [logits for _, logits in alone]) < 1e-5
    targets = [n - 1 for n in LENGTHS]  # loss_mask is 0 on each example's first token only
    weighted = sum(loss_.item() * n for (loss_, _), n in zip(alone, targets)) / sum(targets)
    assert loss.item() == pytest.approx(weighted, abs=1e-5)
    assert (
        abs(weighted - np.mean([loss_.item() for loss_, _ in alone])) > 1e-4
    )  # the weighting matters here


@pytest.mark.parametrize("attn", ["sdpa", "sdpa-dense", "eager"])
def test_controls_show_contamination(tmp_path, base_config, attn):
    trainer, examples, batch = _packed_run(tmp_path, base_config, attn)
    alone = [_alone(trainer.model, ids)[1] for ids in examples]
    total = batch[MODEL_INPUT_IDS].shape[1]
    one = torch.tensor([0, total], dtype=torch.int32)
    no_reset = dict(batch, position_ids=torch.arange(total)[None], cu_seq_lens_q=one,
                    cu_seq_lens_k=one, max_length_q=total, max_length_k=total)  # fmt: skip
    assert _worst_difference(_forward(trainer, no_reset)[1], alone) > 1e-2
    with_cache = _worst_difference(_forward(trainer, dict(batch, use_cache=True))[1], alone)
    if trainer.model.config._attn_implementation == "sdpa_packed":
        assert with_cache < 1e-5, "the packed kernel reads cu_seq_lens, whatever the cache does"
    else:
        assert with_cache > 1e-2, "transformers' masks stop seeing the packing under a KV cache"
