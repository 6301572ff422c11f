"""GPU-only checks (marker `gpu`, skipped without CUDA): flash-attention isolation, bf16, QLoRA.

Run on a CUDA machine with `python -m pytest tests/sfttrain -m gpu` (bench/gpu_check.sh does).
"""

import importlib.util

import numpy as np
import pytest
import torch
from conftest import pack, write_build

import sfttrain
from sfttrain.collator import collate_padding_free
from sfttrain.config import load_config
from sfttrain.training import prepare

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
LENGTHS = (40, 100, 25)


def _packed(tmp_path, base_config, attn):
    rng = np.random.default_rng(0)
    examples = [rng.integers(3, 512, n).tolist() for n in LENGTHS]
    data = write_build(tmp_path / "b", [pack(*examples)])
    overrides = {
        **base_config,
        "data": str(data),
        "attn": attn,
        "dtype": "bf16",
        "training_args": {"disable_tqdm": True},
    }
    run = prepare(load_config(overrides=overrides))
    run.trainer.model.eval()
    return (
        run.trainer,
        examples,
        run.trainer._prepare_inputs(collate_padding_free([run.build.train[0]])),
    )


def _worst(trainer, batch, examples):
    with torch.no_grad():
        packed = (
            trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)[1]
            .logits[0]
            .float()
        )
        starts = np.cumsum((0,) + LENGTHS)
        worst = 0.0
        for s, e, ids in zip(starts, starts[1:], examples):
            alone = (
                trainer.model(input_ids=torch.tensor([ids], device=packed.device)).logits[0].float()
            )
            worst = max(worst, (packed[s:e] - alone).abs().max().item())
    return worst


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="needs flash-attn")
def test_flash_attention_keeps_examples_apart(tmp_path, base_config):
    trainer, examples, batch = _packed(tmp_path, base_config, "flash_attention_2")
    assert _worst(trainer, batch, examples) < 5e-2  # bf16 kernels: same math, other tiling
    total = batch["cu_seq_lens_q"][-1].item()
    one = torch.tensor([0, total], dtype=torch.int32, device=batch["cu_seq_lens_q"].device)
    merged = dict(
        batch, cu_seq_lens_q=one, cu_seq_lens_k=one, max_length_q=total, max_length_k=total
    )
    merged["position_ids"] = torch.arange(total, device=one.device)[None]
    assert _worst(trainer, merged, examples) > 0.2  # control: one long sequence does mix them


@pytest.mark.parametrize("attn", ["sdpa", "sdpa-dense"])  # per example (packed_sdpa.py), dense mask
def test_sdpa_bf16_keeps_examples_apart(tmp_path, base_config, attn):
    trainer, examples, batch = _packed(tmp_path, base_config, attn)
    expected = "sdpa_packed" if attn == "sdpa" else "sdpa"
    assert trainer.model.config._attn_implementation == expected
    assert _worst(trainer, batch, examples) < 5e-2


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_qlora_steps(tmp_path, base_config):
    data = write_build(
        tmp_path / "b", [pack(list(range(3, 67)), list(range(100, 164))) for _ in range(8)]
    )
    qlora = {
        "dtype": "bf16",
        "lora_r": 8,
        "load_in_4bit": True,
        "max_steps": 4,
        "attn": "sdpa",
        "training_args": {"disable_tqdm": True},
    }
    result = sfttrain.train({**base_config, "data": str(data), **qlora})
    assert result.global_step == 4 and np.isfinite(result.last_loss)
