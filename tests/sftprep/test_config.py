"""The build config checks types on construction, from YAML, flags and Python alike, and reports
every bad key at once, one line each; the CLI exits 2 without a traceback."""

import pytest
from typer.testing import CliRunner

import sftprep
from sftprep.cli import app
from sftprep.config import BuildConfig, load_config
from sftprep.errors import ConfigError

runner = CliRunner()
REQUIRED = {"sources": ["a.jsonl"], "tokenizer": "t", "out": "o"}

BAD_VALUES = {  # key: (value, what the line must say)
    "max_length": ("abc", "max_length (--max-length): expected an integer, got 'abc'"),
    "eval_fraction": ("0.1", "eval_fraction (--eval-fraction): expected a number, got '0.1'"),
    "seed": (1.5, "seed (--seed): expected an integer, got 1.5"),
    "num_proc": ("x", "num_proc (--num-proc): expected an integer, got 'x'"),
    "overwrite": (1, "overwrite (--overwrite): expected true or false, got 1"),
    "packing": ("tight", "packing (--packing): expected one of bfd, wrapped, none, got 'tight'"),
    "pad_vocab_to_multiple_of": (
        "8",
        "pad_vocab_to_multiple_of (--pad-vocab-to-multiple-of): expected an integer or null, got '8'",
    ),
    "text_field": (3, "text_field (--text-field): expected a string or null, got 3"),
}


def test_every_bad_value_is_one_line_naming_key_flag_expected_and_got():
    values = {**REQUIRED, **{k: v for k, (v, _) in BAD_VALUES.items()}}
    with pytest.raises(ConfigError) as err:
        load_config(None, values)
    assert sorted(err.value.problems) == sorted(line for _, line in BAD_VALUES.values())
    assert str(err.value).count("\n") == len(BAD_VALUES)


def test_types_are_checked_on_construction_from_python():
    with pytest.raises(ConfigError, match="max_length"):
        BuildConfig(sources=("a",), tokenizer="t", out="o", max_length="2048")
    with pytest.raises(
        ConfigError, match=r"sources\[1\] \(SOURCE\): expected a mapping or a string, got 5"
    ):
        BuildConfig(sources=["a", 5], tokenizer="t", out="o")
    config = BuildConfig(
        sources=["a", "b"], tokenizer="t", out="o", eval_fraction=0
    )  # an int is a fine number
    assert config.sources == ("a", "b")
    assert BuildConfig(sources="one.jsonl", tokenizer="t", out="o").sources == ("one.jsonl",)


def test_python_api_reports_unknown_keys_and_bad_types_together():
    with pytest.raises(ConfigError) as err:
        sftprep.build({**REQUIRED, "max_lenght": 5, "seed": "0"})
    assert len(err.value.problems) == 2
    assert (
        "unknown key(s) max_lenght" in err.value.problems[0]
        and "seed (--seed)" in err.value.problems[1]
    )


def test_yaml_problems_are_all_reported_and_exit_2(tmp_path):
    path = tmp_path / "build.yaml"
    path.write_text(
        'sources: 5\ntokenizer: t\nout: o\nmax_length: "abc"\nbogus: 1\nconcat_token: yes please\n'
    )
    result = runner.invoke(app, ["build", "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "error: invalid build config:" and len(lines) == 5
    assert any("unknown key(s) bogus" in line for line in lines)
    assert any("sources (SOURCE): expected a list, got 5" in line for line in lines)
    assert any(
        "concat_token (--concat-token): expected true or false, got 'yes please'" in line
        for line in lines
    )


def test_bad_yaml_and_a_missing_file_are_one_line(tmp_path):
    path = tmp_path / "build.yaml"
    path.write_text("sources: [a\n")
    result = runner.invoke(app, ["build", "--config", str(path)])
    assert (
        result.exit_code == 2
        and "not valid YAML at line" in result.output
        and result.output.count("\n") == 1
    )
    result = runner.invoke(app, ["build", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "file not found" in result.output


def test_a_bad_flag_value_is_a_usage_error(tmp_path):
    result = runner.invoke(
        app, ["build", "a.jsonl", "--tokenizer", "t", "--out", "o", "--max-length", "abc"]
    )
    assert (
        result.exit_code == 2
        and "Traceback" not in result.output
        and "--max-length" in result.output
    )


def test_flags_are_generated_with_the_right_kinds(tmp_path):
    """Several SOURCEs and repeated --eval are lists, bools take --no-, choices are listed."""
    from sftprep.cli import build

    params = build.__signature__.parameters
    assert str(params["sources"].annotation.__origin__) == "list[str] | None"
    assert str(params["eval_sources"].annotation.__origin__) == "list[str] | None"
    assert params["max_length"].annotation.__origin__ == int | None
    result = runner.invoke(
        app,
        [
            "build",
            "a.jsonl",
            "b.jsonl",
            "--eval",
            "c.jsonl",
            "--eval",
            "d.jsonl",
            "--eval-fraction",
            "0.1",
        ],
    )
    assert result.exit_code == 2 and "Got unexpected extra" not in result.output
    assert (
        "--eval-fraction and --eval both given" in result.output
        and "--tokenizer (config `tokenizer`) is required" in result.output
    )
    help_text = runner.invoke(app, ["build", "--help"], env={"COLUMNS": "250"}).output
    assert "--no-concat-token" in help_text and "One of: bfd, wrapped, none." in help_text
