"""--resume survives a bad checkpoint: the newest one that loads is used, the others are named."""

import json
import os
from pathlib import Path

import pytest
from conftest import random_rows, write_build

import sfttrain
from sfttrain.checkpoints import SEAL, checkpoint_problem
from sfttrain.errors import SfttrainError


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


DAMAGE = {
    "truncated trainer_state.json": (
        lambda c: truncate(c / "trainer_state.json"),
        "trainer_state.json",
    ),
    "truncated model.safetensors": (
        lambda c: truncate(c / "model.safetensors"),
        "model.safetensors",
    ),
    "garbage optimizer.pt": (
        lambda c: (c / "optimizer.pt").write_bytes(os.urandom(4096)),
        "optimizer.pt",
    ),
    "killed mid-save": (
        lambda c: [(c / SEAL).unlink(), (c / "trainer_state.json").unlink()],
        "did not finish",
    ),
}


@pytest.fixture
def run_with_checkpoints(tmp_path, base_config):
    data = write_build(tmp_path / "b", random_rows(12, 64))
    config = {
        **base_config,
        "data": str(data),
        "batch_tokens": 128,
        "max_steps": 4,
        "save_steps": 2,
    }
    sfttrain.train(config)
    out = Path(config["output_dir"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert all(not checkpoint_problem(p) for p in out.glob("checkpoint-*"))
    assert json.loads((out / "checkpoint-4" / SEAL).read_text())["step"] == 4
    return config, out


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_falls_back_to_the_newest_checkpoint_that_loads(
    run_with_checkpoints, capsys, damage
):
    config, out = run_with_checkpoints
    spoil, named = DAMAGE[damage]
    spoil(out / "checkpoint-4")
    assert named in checkpoint_problem(out / "checkpoint-4")
    result = sfttrain.train({**config, "max_steps": 6, "resume": True})
    assert result.global_step == 6
    err = capsys.readouterr().err
    assert "--resume: skipping checkpoint-4" in err and named in err


def test_resume_with_no_loadable_checkpoint_is_one_line(run_with_checkpoints):
    config, out = run_with_checkpoints
    for name in ("checkpoint-2", "checkpoint-4"):
        truncate(out / name / "trainer_state.json")
    with pytest.raises(
        SfttrainError,
        match="no checkpoint in --output-dir .* can be loaded: checkpoint-4 .*checkpoint-2",
    ) as err:
        sfttrain.train({**config, "max_steps": 6, "resume": True})
    assert "\n" not in str(err.value)
