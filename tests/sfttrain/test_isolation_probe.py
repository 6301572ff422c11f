"""The isolation probe (sfttrain/isolation_probe.py) refuses models that let packed examples see
each other, and lets attention models (every one the rest of the suite trains) through."""

import pytest
from conftest import SMALL_VOCAB, random_rows, write_build

import sfttrain
from sfttrain.errors import SfttrainError


def tiny_config(folder, model_type: str, **values):
    """config.json of a small random-init model of this architecture (transformers' defaults)."""
    from transformers import AutoConfig

    AutoConfig.for_model(
        model_type, vocab_size=SMALL_VOCAB, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2, **values,
    ).save_pretrained(folder)  # fmt: skip
    return folder


def run(tmp_path, base_config, model, **extra):
    data = write_build(tmp_path / "b", random_rows(2, 32))
    config = {**base_config, "model": str(model), "data": str(data), "max_steps": 1, **extra}
    return sfttrain.train(config)


def test_a_state_space_hybrid_that_leaks_is_refused(tmp_path, base_config):
    # Nemotron-H's Mamba layers run transformers' reference scan, which ignores example bounds
    model = tiny_config(tmp_path / "nemotron", "nemotron_h")
    with pytest.raises(SfttrainError, match="lets packed examples see each other") as err:
        run(tmp_path, base_config, model, attn="eager")
    assert "\n" not in str(err.value) and "changed the next one's logits by" in str(err.value)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    result = run(tmp_path, base_config, model, attn="eager", check_isolation=False)
    assert result.global_step == 1, "control: the same model trains when the probe is off"


def test_a_model_that_refuses_packed_rows_is_one_line(tmp_path, base_config):
    # Qwen3-Next's gated delta net raises without flash-linear-attention: one line, no traceback
    model = tiny_config(tmp_path / "qwen3next", "qwen3_next")
    with pytest.raises(
        SfttrainError, match="cannot train on packed rows: .*flash-linear-attention"
    ):
        run(tmp_path, base_config, model, attn="eager")


def test_attention_models_pass_and_say_so(tmp_path, base_config, capsys):
    assert run(tmp_path, base_config, base_config["model"]).global_step == 1
    assert "isolation: packed examples stay apart" in capsys.readouterr().err


def inkling2_config(folder):
    """A tiny Inkling2 text model: attention layers beside short convolutions (causal-conv1d),
    whose code reads a `seq_idx`."""
    return tiny_config(
        folder, "inkling2_text", unpadded_vocab_size=SMALL_VOCAB, swa_num_attention_heads=4,
        swa_num_key_value_heads=2, swa_head_dim=16, sliding_window_size=64, d_rel=4,
        rel_extent=64, moe_intermediate_size=32, n_routed_experts=4, num_experts_per_tok=2,
        n_layers_per_attn_res_block=1,
    )  # fmt: skip


def test_a_model_that_reads_seq_idx_gets_it(tmp_path, base_config, capsys, monkeypatch):
    # with seq_idx, transformers' reference convolution refuses packed rows (the kernel that keeps
    # them apart, causal-conv1d, is not installed): proof that the bounds reach the layers
    model = inkling2_config(tmp_path / "inkling2")
    with pytest.raises(SfttrainError, match="cannot train on packed rows: .*causal_conv1d") as err:
        run(tmp_path, base_config, model, attn="eager")
    assert "\n" not in str(err.value)
    assert "boundaries: each token's example index (seq_idx)" in capsys.readouterr().err
    # control: without seq_idx the reference convolution runs across examples, and leaks
    monkeypatch.setattr("sfttrain.training.reads_seq_idx", lambda model: False)
    with pytest.raises(SfttrainError, match="lets packed examples see each other"):
        run(tmp_path, base_config, model, attn="eager")
