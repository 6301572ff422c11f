"""`sfttrain run` through typer's CliRunner: flags, config file, one-line errors, summary."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO, random_rows, write_build
from typer.testing import CliRunner

from sfttrain import cli as sfttrain_cli
from sfttrain.checkpoints import CHECKPOINT, SEAL, checkpoint_problem
from sfttrain.cli import app, interrupted_line
from sfttrain.config import field_names, flag

runner = CliRunner()


def test_every_config_key_has_a_flag():
    result = runner.invoke(app, ["run", "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    missing = [flag(k) for k in field_names() if flag(k) not in result.output]
    assert not missing


def test_run_from_a_config_file_with_flag_overrides(tmp_path, base_config):
    data = write_build(tmp_path / "b", random_rows(8, 32), eval_rows=random_rows(2, 32, seed=1))
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump({**base_config, "data": str(data), "max_steps": 100}))
    result = runner.invoke(
        app, ["run", "--config", str(config_file), "--max-steps", "3", "--model-kwargs", "{}"]
    )
    assert result.exit_code == 0, result.output
    assert "sfttrain summary" in result.output and "eval_token_accuracy" in result.output
    assert (tmp_path / "run" / "sftprep_manifest.json").is_file()
    assert "steps" in result.output and "│ 3" in result.output.replace("  ", " ")


def test_user_errors_are_one_line_and_exit_1(tmp_path, base_config):
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump({**base_config, "data": str(tmp_path / "missing")}))
    result = runner.invoke(app, ["run", "--config", str(config_file)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --data") and "sftprep build" in lines[0]


def test_bad_json_flag(tmp_path):
    result = runner.invoke(
        app, ["run", "--data", "d", "--model", "m", "--output-dir", "o", "--model-kwargs", "{oops"]
    )
    assert result.exit_code == 1 and result.output.startswith(
        "error: --model-kwargs must be a JSON object"
    )


def test_bare_command_shows_help():
    result = runner.invoke(app, [])
    assert "run" in result.output


def test_importing_the_package_does_not_import_torch():
    code = "import sys, sfttrain, sfttrain.cli; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_names_the_checkpoint_to_resume_from_in_one_line(
    tmp_path, base_config, sig
):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM while training: no traceback, exit 128+signal,
    and a last line naming the newest checkpoint that loads, which --resume then continues."""
    data = write_build(tmp_path / "b", random_rows(64, 32))
    config_file = tmp_path / "train.yaml"
    config = {**base_config, "data": str(data), "max_steps": 100_000, "save_steps": 2}
    config_file.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "sfttrain.cli", "run", "--config", str(config_file)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    sealed = tmp_path / "run" / "checkpoint-4" / SEAL
    deadline = time.monotonic() + 240
    while not sealed.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert sealed.is_file(), err[-2000:]
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: training stopped; ") and "--resume" in last, last
    named = Path(last.split("; ")[1].split(" is the newest")[0])
    assert CHECKPOINT.match(named.name) and int(named.name.split("-")[1]) >= 4, last
    assert checkpoint_problem(named) == ""


def test_the_interrupted_line_says_what_is_left(tmp_path):
    """While starting: nothing written; before any checkpoint: nothing to resume; after: the
    newest checkpoint that loads (a newer, unfinished one is passed over)."""
    config = SimpleNamespace(output_dir=str(tmp_path / "run"))
    assert "nothing was trained or written" in interrupted_line(None)
    assert "before a checkpoint was saved" in interrupted_line(config)
    (tmp_path / "run" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (tmp_path / "run" / "checkpoint-5").mkdir()  # killed mid-save: no trainer state
    line = interrupted_line(config)
    assert str(tmp_path / "run" / "checkpoint-3") in line and "--resume" in line, line


def test_under_a_launcher_sigterm_keeps_its_default(tmp_path, monkeypatch):
    """torchrun stops its workers with SIGTERM: each must die at once (a Python handler would wait
    for a collective to return), so a run among others takes no SIGTERM handler; alone it does."""
    taken = []
    real = signal.signal
    monkeypatch.setattr(
        signal, "signal", lambda sig, handler: taken.append(sig) or real(sig, handler)
    )
    missing = [
        "run",
        "--data",
        str(tmp_path / "none"),
        "--model",
        "m",
        "--output-dir",
        str(tmp_path / "o"),
    ]
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert runner.invoke(app, missing).exit_code != 0 and signal.SIGTERM not in taken
    monkeypatch.delenv("WORLD_SIZE")
    assert runner.invoke(app, missing).exit_code != 0 and signal.SIGTERM in taken
    assert signal.getsignal(signal.SIGTERM) is not sfttrain_cli._interrupt  # given back
