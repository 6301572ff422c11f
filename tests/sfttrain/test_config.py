"""The config type: YAML and flags fill it, validation names the key to change."""

import dataclasses

import pytest
from conftest import REPO

from sfttrain.config import TrainConfig, field_docs, field_names, load_config
from sfttrain.errors import SfttrainError

REQUIRED = {"data": "d", "model": "m", "output_dir": "o"}


def test_every_shipped_config_loads():
    shipped = sorted((REPO / "examples").glob("train*.yaml"))
    assert shipped  # guard: the loop below must check something
    for path in shipped:
        config = load_config(path)
        assert isinstance(config, TrainConfig)
        assert config.model == str(REPO / "examples" / "tiny-llama")  # relative to the file


def test_paths_in_a_file_are_relative_to_it(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("data: ../b\nmodel: org/hub-name\noutput_dir: runs/x\n")
    config = load_config(path, {"adapter": "relative/to/cwd"})
    assert config.data == str(tmp_path / "b") and config.output_dir == str(
        tmp_path / "sub" / "runs" / "x"
    )
    assert config.model == "org/hub-name" and config.adapter == "relative/to/cwd"


def test_every_field_has_a_docstring():
    assert set(field_docs()) == set(field_names())


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: d\nmodel: m\noutput_dir: o\nlearning_rate: 0.1\nepochs: 2\n")
    config = load_config(path, {"learning_rate": 0.5, "epochs": None})
    assert config.learning_rate == 0.5 and config.epochs == 2


def test_all_problems_are_reported_at_once(tmp_path):
    with pytest.raises(SfttrainError) as error:
        load_config(overrides={"dtype": "fp8", "grad_accum": 0, "load_in_4bit": True})
    message = str(error.value)
    for expected in ("--data", "--model", "--output-dir", "--dtype", "--grad-accum", "--lora-r"):
        assert expected in message


def test_unknown_keys_and_wrong_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: d\nmodel: m\noutput_dir: o\nlerning_rate: 0.1\nepochs: many\n")
    with pytest.raises(
        SfttrainError,
        match=r"(?s)lerning_rate.*training_args.*--epochs\): expected a number, got .many.",
    ):
        load_config(path)


def test_bool_is_not_an_int():
    with pytest.raises(SfttrainError, match="--lora-r"):
        load_config(overrides={**REQUIRED, "lora_r": True})


def test_training_args_cannot_shadow_a_key():
    with pytest.raises(SfttrainError, match="training_args.learning_rate.*--learning-rate"):
        load_config(overrides={**REQUIRED, "training_args": {"learning_rate": 1.0}})
    config = load_config(overrides={**REQUIRED, "training_args": {"save_total_limit": 2}})
    assert config.training_args == {"save_total_limit": 2}


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"lora_r": 8, "adapter": "a"}, "drop --lora-r"),
        ({"load_in_8bit": True, "load_in_4bit": True, "lora_r": 8}, "exclude each other"),
        ({"merge_adapter": True}, "--merge-adapter needs an adapter"),
        ({"merge_adapter": True, "lora_r": 8, "load_in_4bit": True}, "quantized base"),
        ({"warmup_ratio": 1.0}, "--warmup-ratio"),
    ],
)
def test_combinations(overrides, message):
    with pytest.raises(SfttrainError, match=message):
        load_config(overrides={**REQUIRED, **overrides})


def test_config_is_frozen():
    config = load_config(overrides=REQUIRED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.learning_rate = 1.0  # type: ignore[misc]


def test_missing_gpu_packages_say_how_to_install(monkeypatch):
    import importlib.util

    import torch

    from sfttrain import model_loading

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("flash_attn", "bitsandbytes") else real(name, *a),
    )
    with pytest.raises(SfttrainError, match=r"pip install 'sftprep\[gpu\]'"):
        model_loading.resolve_attn("flash_attention_2", torch.bfloat16)
    config = load_config(overrides={**REQUIRED, "lora_r": 8, "load_in_4bit": True})
    with pytest.raises(
        SfttrainError,
        match=r"--load-in-4bit needs the bitsandbytes package: pip install 'sftprep\[gpu\]'",
    ):
        model_loading.load_model(config, torch.bfloat16, "sdpa")
    assert model_loading.resolve_attn("auto", torch.float32)[0] == "sdpa"
