"""Before the model loads: its config decides the attention kernel (--attn auto never picks one
the architecture refuses) and whether the build's ids fit its embeddings."""

import json

import pytest
import torch
from conftest import pack, random_rows, write_build

import sfttrain
from sfttrain import model_loading
from sfttrain.errors import SfttrainError


def tiny_gemma2(folder):
    """A two-layer Gemma2 config with a 512-token vocabulary (random init on CPU)."""
    folder.mkdir()
    config = {
        "architectures": ["Gemma2ForCausalLM"],
        "model_type": "gemma2",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 512,
        "sliding_window": 64,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_attn_auto_picks_eager_where_sdpa_is_refused_and_trains(tmp_path, base_config, capsys):
    model = tiny_gemma2(tmp_path / "gemma2")
    data = write_build(tmp_path / "b", random_rows(4, 32))
    config = {**base_config, "model": str(model), "data": str(data), "max_steps": 1}
    result = sfttrain.train({**config, "attn": "auto"})
    assert result.global_step == 1
    assert (
        "attention: eager (auto: flash-attn not installed, and Gemma2ForCausalLM does not support sdpa)"
        in capsys.readouterr().err
    )
    with pytest.raises(SfttrainError, match=r"--attn sdpa: Gemma2ForCausalLM does not support it"):
        sfttrain.train({**config, "attn": "sdpa", "output_dir": str(tmp_path / "other")})


def test_attn_auto_keeps_sdpa_where_the_model_supports_it():
    from transformers import LlamaConfig

    llama = model_loading.causal_lm_class(LlamaConfig())
    assert model_loading.resolve_attn("auto", torch.float32, llama)[0] == "sdpa"
    assert model_loading.resolve_attn("auto", torch.float32, None)[0] == "sdpa", "unknown class"


def test_ids_beyond_the_vocab_are_refused_before_the_model_loads(
    tmp_path, base_config, monkeypatch
):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(sfttrain.training, "load_model", no_loading)
    data = write_build(tmp_path / "b", [pack([1, 2, 700, 4])])  # the small model has 512 rows
    with pytest.raises(SfttrainError, match="token id 700 .* only 512 rows"):
        sfttrain.train({**base_config, "data": str(data)})


def one_step_changes(tmp_path, base_config, dtype: str, name: str) -> tuple[float, torch.dtype]:
    """Share of weights one AdamW step at lr 2e-5 changes, and the dtype they are kept in."""
    from sfttrain.config import load_config
    from sfttrain.training import prepare

    data = write_build(tmp_path / f"b-{name}", random_rows(2, 32))
    config = {**base_config, "data": str(data), "dtype": dtype, "learning_rate": 2e-5,
              "max_steps": 1, "output_dir": str(tmp_path / name)}  # fmt: skip
    run = prepare(load_config(overrides=config))
    weight = run.trainer.model.model.layers[0].mlp.up_proj.weight
    before = weight.detach().clone()
    run.trainer.train()
    return (weight.detach() != before).float().mean().item(), weight.dtype


def test_bf16_full_fine_tuning_keeps_fp32_master_weights(tmp_path, base_config, capsys):
    changed, kept = one_step_changes(tmp_path, base_config, "bf16", "mixed")
    assert kept == torch.float32 and changed > 0.99, "every weight moves a little"
    pure, kept_pure = one_step_changes(tmp_path, base_config, "bf16-pure", "pure")
    assert kept_pure == torch.bfloat16 and pure < 0.9 * changed, "the control: bf16 loses updates"
    assert "warning: --dtype bf16-pure trains bf16 weights" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for CPU machines")
def test_flex_attention_on_cpu_is_one_line_not_a_backward_traceback(tmp_path, base_config):
    data = write_build(tmp_path / "b", random_rows(2, 32))
    config = {**base_config, "data": str(data), "max_steps": 1, "attn": "flex_attention"}
    with pytest.raises(SfttrainError, match="FlexAttention has no backward pass on CPU") as err:
        sfttrain.train(config)
    assert "\n" not in str(err.value)
