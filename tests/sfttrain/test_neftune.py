"""NEFTune per example on packed rows: each token's noise is bounded by alpha / sqrt(L_i * d), L_i
its own example's length, not the packed micro-batch's (transformers' and TRL's scale)."""

import math

import numpy as np
import torch
from conftest import pack, write_build

from sfttrain.config import load_config
from sfttrain.neftune import PackedNeftune
from sfttrain.training import prepare

ALPHA, WIDTH = 5.0, 64
LENGTHS = (16, 32, 48)


def noise_of(hook: PackedNeftune, cu_seq_lens, train: bool = True) -> torch.Tensor:
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(100, WIDTH)
    embedding.register_forward_hook(hook)
    embedding.train(train)
    hook.cu_seq_lens = cu_seq_lens
    ids = torch.randint(0, 100, (1, sum(LENGTHS)))
    with torch.no_grad():
        return (embedding(ids) - embedding.weight[ids])[0]


def test_each_example_gets_noise_scaled_by_its_own_length():
    bounds = torch.tensor(np.concatenate([[0], np.cumsum(LENGTHS)]), dtype=torch.int32)
    noise = noise_of(PackedNeftune(ALPHA), bounds)
    for start, length in zip(np.cumsum((0,) + LENGTHS[:-1]), LENGTHS):
        part = noise[start : start + length]
        bound = ALPHA / math.sqrt(length * WIDTH)
        assert part.abs().max() <= bound * (1 + 1e-5)
        assert part.abs().max() >= 0.97 * bound, "uniform in [-bound, bound]: its max is near bound"
        assert abs(part.std().item() - bound / math.sqrt(3)) < 0.06 * bound
    whole = ALPHA / math.sqrt(sum(LENGTHS) * WIDTH)
    assert noise[:16].abs().max() > 1.5 * whole, "the control: the micro-batch's scale is weaker"


def test_no_noise_in_eval_mode_and_the_whole_row_without_bounds():
    hook = PackedNeftune(ALPHA)
    assert noise_of(hook, None, train=False).abs().max() == 0
    noise = noise_of(hook, None)
    assert noise.abs().max() <= ALPHA / math.sqrt(sum(LENGTHS) * WIDTH) * (1 + 1e-5)


def test_the_trainer_hands_each_micro_batch_its_bounds(tmp_path, base_config):
    rows = [pack(list(range(3, 19)), list(range(20, 52))) for _ in range(4)]
    data = write_build(tmp_path / "b", rows)
    config = {**base_config, "data": str(data), "max_steps": 2, "neftune_alpha": ALPHA}
    run = prepare(load_config(overrides=config))
    assert run.trainer.args.neftune_noise_alpha is None, "transformers' own hook stays off"
    run.trainer.train()
    bounds = run.trainer.neftune.cu_seq_lens
    assert bounds is not None and np.diff(bounds.tolist()).tolist()[:2] == [16, 32]
