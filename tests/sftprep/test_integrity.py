"""A build is checked, not trusted: "up to date" and "identical" only for intact shards."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from sftprep.cli import app
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES
from tests.sftprep.build_checks import check_build

runner = CliRunner()
SOURCE = str(EXAMPLES / "data" / "chat.jsonl")


def build(out, *extra):
    return runner.invoke(
        app,
        ["build", SOURCE, "--tokenizer", str(BUNDLED_TOKENIZER), "--out", str(out), "-q", *extra],
    )


def first_shard(out):
    return (
        out
        / json.loads((out / "manifest.json").read_text())["splits"]["train"]["shards"][0]["path"]
    )


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # same size, other bytes: e.g. two ids swapped
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage,says",
    [
        (lambda p: p.unlink(), "is missing"),
        (lambda p: p.write_bytes(p.read_bytes()[:-50]), "bytes, the manifest says"),
        (flip_a_byte, "has sha256"),
    ],
)
def test_a_damaged_build_is_rebuilt_not_called_up_to_date(tmp_path, damage, says):
    out = tmp_path / "out"
    assert build(out).exit_code == 0
    intact = first_shard(out).read_bytes()
    assert "up to date" in build(out).output
    damage(first_shard(out))
    result = build(out)  # no --overwrite needed: the build in `out` is this build
    assert result.exit_code == 0, result.output
    assert (
        "held this build damaged" in result.output
        and says in result.output
        and "up to date" not in result.output
    )
    assert first_shard(out).read_bytes() == intact
    check_build(out)
    assert "up to date" in build(out).output


def test_diff_does_not_call_a_damaged_copy_identical(tmp_path):
    out = tmp_path / "a"
    assert build(out).exit_code == 0
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    assert runner.invoke(app, ["diff", str(out), str(copy)]).output.startswith("identical")
    flip_a_byte(first_shard(copy))
    result = runner.invoke(app, ["diff", str(out), str(copy)])
    assert (
        result.output.startswith("differ: same fingerprint")
        and f"b {copy}: train/" in result.output
    )
    assert f"a {out}" not in result.output  # the intact side is not blamed


def test_yaml_numbers_as_users_write_them(tmp_path):
    from sftprep.config import load_config
    from sfttrain.config import load_config as load_train_config

    path = tmp_path / "c.yaml"
    path.write_text(f"sources: [{SOURCE}]\ntokenizer: t\nout: o\neval_fraction: 1e-1\n")
    assert load_config(str(path), {}).eval_fraction == 0.1
    path.write_text("data: d\nmodel: m\noutput_dir: o\nlearning_rate: 1e-5\nwarmup_ratio: 5E-2\n")
    config = load_train_config(path)
    assert config.learning_rate == 1e-5 and config.warmup_ratio == 0.05
    path.write_text('data: d\nmodel: m\noutput_dir: o\nlearning_rate: "1e-5"\n')  # quoted: a string
    with pytest.raises(Exception, match="learning_rate .--learning-rate.: expected a number"):
        load_train_config(path)
