"""`sfttrain run` through typer's CliRunner: flags, config file, one-line errors, summary."""

import subprocess
import sys

import yaml
from conftest import REPO, random_rows, write_build
from typer.testing import CliRunner

from sfttrain.cli import app
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
