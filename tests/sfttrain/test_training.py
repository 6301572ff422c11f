"""End to end on CPU: a tiny model learns, resumes exactly, saves what it should, refuses bad inputs."""

import json

import numpy as np
import pytest
from conftest import TINY_LLAMA_DIR, pack, random_rows, write_build
from transformers import TrainerCallback

import sfttrain
from schemas import EXAMPLE_IDS
from sfttrain.config import load_config
from sfttrain.errors import SfttrainError
from sfttrain.training import COPIED_MANIFEST, prepare


def memorizable_rows(n=8):
    """Rows packing two of four fixed 32-token sentences: a tiny model can learn them by heart."""
    rng = np.random.default_rng(0)
    sentences = [rng.integers(3, 512, 32).tolist() for _ in range(4)]
    return [pack(sentences[i % 4], sentences[(i + 1) % 4], first_id=2 * i) for i in range(n)]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_tiny_model_overfits(tmp_path, base_config, mode):
    data = write_build(tmp_path / "b", memorizable_rows(), eval_rows=memorizable_rows(2))
    extra = {"lora_r": 16, "learning_rate": 1e-2, "lora_dropout": 0.0} if mode == "lora" else {}
    no_checkpoints = {**base_config["training_args"], "save_strategy": "no"}
    result = sfttrain.train(
        {
            **base_config,
            "data": str(data),
            "max_steps": 40,
            "batch_tokens": 128,
            "training_args": no_checkpoints,
            **extra,
        }
    )
    assert result.global_step == 40
    assert result.last_loss < result.first_loss / 2
    assert result.tokens == 40 * 128
    assert result.metrics["eval_loss"] < result.first_loss / 2
    assert 0 < result.metrics["eval_token_accuracy"] <= 1
    out = tmp_path / "run"
    assert (out / COPIED_MANIFEST).read_text() == (data / "manifest.json").read_text()
    assert (out / "tokenizer.json").is_file()
    if mode == "lora":
        assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    else:
        assert (out / "model.safetensors").is_file()
        assert (
            json.loads((out / "config.json").read_text())["use_cache"] is True
        )  # restored for generation


def test_merge_adapter_saves_a_plain_model(tmp_path, base_config):
    data = write_build(tmp_path / "b", memorizable_rows(4))
    sfttrain.train(
        {**base_config, "data": str(data), "max_steps": 2, "lora_r": 4, "merge_adapter": True}
    )
    out = tmp_path / "run"
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()


def test_continue_an_adapter(tmp_path, base_config):
    data = write_build(tmp_path / "b", memorizable_rows(4))
    sfttrain.train(
        {
            **base_config,
            "data": str(data),
            "max_steps": 2,
            "lora_r": 4,
            "output_dir": str(tmp_path / "first"),
        }
    )
    # the adapter sits on a random-init base: same seed, same base weights
    result = sfttrain.train(
        {**base_config, "data": str(data), "max_steps": 2, "adapter": str(tmp_path / "first")}
    )
    assert result.global_step == 2 and (tmp_path / "run" / "adapter_config.json").is_file()


def test_neftune_and_gradient_checkpointing_run(tmp_path, base_config):
    data = write_build(tmp_path / "b", memorizable_rows(4))
    result = sfttrain.train(
        {
            **base_config,
            "data": str(data),
            "max_steps": 2,
            "neftune_alpha": 5.0,
            "gradient_checkpointing": True,
        }
    )
    assert result.global_step == 2 and np.isfinite(result.last_loss)


class Record(TrainerCallback):
    """Stops after `stop_at` optimizer steps when asked to."""

    def __init__(self, stop_at=None):
        self.stop_at = stop_at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.stop_at:
            control.should_training_stop = True


def _recorded_run(config, stop_at=None):
    """Train, returning the example ids of every micro-batch in order and the logged losses."""
    run = prepare(config, callbacks=[Record(stop_at)])
    seen = []
    collate = run.trainer.data_collator

    def recording(rows):
        seen.append(sorted(int(i) for r in rows for i in r[EXAMPLE_IDS]))
        return collate(rows)

    run.trainer.data_collator = recording
    run.trainer.train(resume_from_checkpoint=run.resume_from)
    losses = {e["step"]: e["loss"] for e in run.trainer.state.log_history if "loss" in e}
    return seen, losses


def test_resume_continues_with_the_identical_next_batch(tmp_path, base_config):
    # 12 rows of 64 tokens, 128-token micro-batches -> 6 per epoch, 3 steps of 2 per epoch.
    data = write_build(tmp_path / "b", random_rows(12, 64))
    common = {
        **base_config,
        "data": str(data),
        "batch_tokens": 128,
        "grad_accum": 2,
        "epochs": 3,
        "save_steps": 4,
    }
    whole, whole_losses = _recorded_run(
        load_config(overrides={**common, "output_dir": str(tmp_path / "whole")})
    )
    assert len(whole) == 18
    assert (
        whole[:6] != whole[6:12]
    )  # epochs differ in order, so resuming in epoch 2 tests the epoch too

    part = {**common, "output_dir": str(tmp_path / "part")}
    first, _ = _recorded_run(load_config(overrides=part), stop_at=4)
    assert (
        first[:8] == whole[:8]
    )  # (accelerate collates one batch ahead, so `first` may hold a 9th)
    rest, rest_losses = _recorded_run(load_config(overrides={**part, "resume": True}))
    assert rest == whole[8:]  # step 5 starts mid-epoch 2 with the batch the whole run used
    for step, loss in rest_losses.items():
        assert loss == pytest.approx(whole_losses[step], rel=1e-4)


def test_resume_without_checkpoint(tmp_path, base_config):
    data = write_build(tmp_path / "b", random_rows(2, 16))
    with pytest.raises(SfttrainError, match="--resume: no checkpoint"):
        sfttrain.train({**base_config, "data": str(data), "resume": True})


def test_batch_tokens_below_the_longest_row(tmp_path, base_config):
    data = write_build(tmp_path / "b", random_rows(2, 64))
    with pytest.raises(SfttrainError, match="--batch-tokens 32 .*max_length is 64"):
        sfttrain.train({**base_config, "data": str(data), "batch_tokens": 32})


def test_ids_beyond_the_embeddings_are_refused(tmp_path, base_config):
    data = write_build(tmp_path / "b", [pack([1, 2, 700, 4])])  # the small model has 512 rows
    with pytest.raises(SfttrainError, match="token id 700 .* only 512 rows"):
        sfttrain.train({**base_config, "data": str(data)})


def test_added_tokens_grow_the_embeddings(tmp_path, base_config):
    data = write_build(
        tmp_path / "b", [pack([1, 49152, 5, 49153, 7])], added_tokens=("<|tool|>", "<|/tool|>")
    )
    config = load_config(
        overrides={
            **base_config,
            "data": str(data),
            "model": str(TINY_LLAMA_DIR),
            "pad_vocab_to_multiple_of": 64,
            "max_steps": 1,
        }
    )
    run = prepare(config)
    assert (
        run.trainer.model.get_input_embeddings().weight.shape[0] == 49216
    )  # 49154 rounded up to 64
    assert len(run.trainer.processing_class) == 49154
    run.trainer.train()


def test_lora_trains_the_rows_of_added_tokens(tmp_path, base_config):
    data = write_build(
        tmp_path / "b", [pack([1, 49152, 5, 49153, 7])], added_tokens=("<|tool|>", "<|/tool|>")
    )
    run = prepare(
        load_config(
            overrides={**base_config, "data": str(data), "model": str(TINY_LLAMA_DIR), "lora_r": 4}
        )
    )
    trainable = [n for n, p in run.trainer.model.named_parameters() if p.requires_grad]
    assert any("trainable_tokens" in n for n in trainable) and any("lora_A" in n for n in trainable)
