"""--output-dir protects a user's files, the build, the model and a previous run: training never
overwrites or deletes what it did not write, and two runs never share one folder."""

import os

import pytest
import yaml
from conftest import random_rows, write_build
from typer.testing import CliRunner

from schemas.output_folder import folder_lock
from sfttrain.cli import app
from sfttrain.errors import SfttrainError
from sfttrain.output_dir import RUN_MARKER

runner = CliRunner()


def train(tmp_path, base_config, **overrides):
    """`sfttrain run` from a config file; the result of CliRunner."""
    data = tmp_path / "b"
    if not data.exists():
        write_build(data, random_rows(4, 16))
    config = {**base_config, "data": str(data), "max_steps": 1, **overrides}
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return runner.invoke(app, ["run", "--config", str(config_file)])


def refused(result, *needles) -> bool:
    """Exit 1 with one error line (after at most the `attention:` announcement), no traceback."""
    lines = [ln for ln in result.output.strip().splitlines() if not ln.startswith("attention: ")]
    return (
        result.exit_code == 1
        and len(lines) == 1
        and lines[0].startswith("error: ")
        and all(n in lines[0] for n in needles)
    )


def test_a_previous_run_is_continued_with_resume_never_restarted_over(tmp_path, base_config):
    first = train(tmp_path, base_config)
    assert first.exit_code == 0, first.output
    run = tmp_path / "run"
    assert (run / RUN_MARKER).is_file() and (run / "checkpoint-1").is_dir()
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    again = train(tmp_path, base_config)
    assert refused(again, "holds a training run", "--resume")
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before, "nothing was touched"
    resumed = train(tmp_path, base_config, resume=True, max_steps=2)
    assert resumed.exit_code == 0, resumed.output
    assert (run / "checkpoint-2").is_dir()


def test_a_users_files_are_never_written_over(tmp_path, base_config):
    notes = tmp_path / "mine" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("keep me")
    result = train(tmp_path, base_config, output_dir=str(notes.parent))
    assert refused(result, "holds 1 entry no sfttrain run wrote (notes.txt)")
    assert [p.name for p in notes.parent.iterdir()] == ["notes.txt"]
    assert refused(train(tmp_path, base_config, output_dir=str(notes)), "is a file")
    assert refused(train(tmp_path, base_config, output_dir=str(notes / "run")), "which is a file")


@pytest.mark.parametrize("key", ["data", "model", "tokenizer"])
def test_the_build_the_model_and_the_tokenizer_are_never_the_output(tmp_path, base_config, key):
    write_build(tmp_path / "b", random_rows(4, 16))
    folder = str(tmp_path / "b") if key == "data" else base_config[key]
    before = sorted(os.listdir(folder))
    result = train(tmp_path, base_config, output_dir=folder)
    assert refused(result, f"is the --{key} folder")
    assert sorted(os.listdir(folder)) == before
    if key == "data":
        inside = train(tmp_path, base_config, output_dir=str(tmp_path / "b" / "run"))
        assert refused(inside, "lies inside the --data build")


def test_the_current_folder_is_refused(tmp_path, base_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert refused(train(tmp_path, base_config, output_dir="."), "is the current folder")


def test_a_concurrent_run_into_the_same_folder_is_refused(tmp_path, base_config):
    run = tmp_path / "run"
    with folder_lock(run, "--output-dir", SfttrainError):  # another run holds it (this process)
        result = train(tmp_path, base_config)
    assert refused(result, f"being written by another process (pid {os.getpid()})")
    assert not run.exists()


def test_a_run_that_fails_before_saving_leaves_no_folder(tmp_path, base_config):
    (tmp_path / "no-model").mkdir()
    result = train(
        tmp_path,
        base_config,
        output_dir=str(tmp_path / "new" / "parent" / "run"),
        model=str(tmp_path / "no-model"),
        random_init=False,
    )
    assert refused(result, "could not load --model")
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".*lock"))


def test_only_rank_0_checks_and_locks_the_folder(tmp_path, base_config, monkeypatch):
    """Under torchrun every rank runs the CLI; the others must not see rank 0's run as foreign."""
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_MARKER).write_text("{}")
    (run / "config.json").write_text("{}")
    monkeypatch.setenv("RANK", "1")
    from sfttrain.config import TrainConfig
    from sfttrain.output_dir import output_dir_lock

    config = TrainConfig(**{**base_config, "data": str(tmp_path / "b")})
    with output_dir_lock(config):
        assert not list(tmp_path.glob(".run.lock"))
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SfttrainError, match="holds a training run"), output_dir_lock(config):
        pass


def test_a_bad_model_folder_is_one_line(tmp_path, base_config, small_model_dir):
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "m"
    weights.mkdir()
    (weights / "config.json").write_text((small_model_dir / "config.json").read_text())
    save_file({"x": torch.zeros(1000)}, str(weights / "model.safetensors"))
    data = (weights / "model.safetensors").read_bytes()
    (weights / "model.safetensors").write_bytes(data[: len(data) // 2])
    result = train(tmp_path, base_config, model=str(weights), random_init=False)
    assert refused(result, "could not load --model", "deserializing header")
    (weights / "config.json").write_text("{}")
    result = train(tmp_path, base_config, model=str(weights), random_init=False)
    assert refused(result, "could not load --model", "model_type")
