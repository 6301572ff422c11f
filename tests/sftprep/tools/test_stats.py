"""`sftprep stats`: the tables repeat the manifest's numbers; --plot writes a PNG, or says how to
install matplotlib when it is missing."""

import builtins
import os

import pytest
from typer.testing import CliRunner

import sftprep
from sftprep.cli import app
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES
from tests.sftprep.build_checks import load_manifest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A build with an eval split and drops (overlong chats), sources named relative to examples/."""
    out = tmp_path_factory.mktemp("stats") / "build"
    here = os.getcwd()
    os.chdir(EXAMPLES)
    try:
        sftprep.build(
            {
                "sources": ["data/chat.jsonl", "data/alpaca.json", "data/prompt_completion.jsonl"],
                "tokenizer": str(BUNDLED_TOKENIZER),
                "out": str(out),
                "max_length": 56,
                "overlong": "drop",
                "eval_fraction": 0.25,
                "num_proc": 1,
            }
        )
    finally:
        os.chdir(here)
    return out


def table_rows(output: str) -> dict[str, list[str]]:
    """First cell -> all cells, for every body line of the rich tables."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


def test_tables_repeat_the_manifest(build):
    result = CliRunner().invoke(app, ["stats", str(build)])
    assert result.exit_code == 0, result.output
    manifest, rows = load_manifest(build), table_rows(result.output)
    assert set(manifest["splits"]) == {"train", "eval"}
    for name, s in manifest["splits"].items():
        assert rows[name][1:6] == [
            f"{s['examples']:,}",
            f"{s['rows']:,}",
            f"{s['tokens']:,}",
            f"{s['loss_tokens']:,}",
            f"{s['loss_tokens'] / s['tokens']:.2%}",
        ]
        assert rows[name][7] == f"{s['packing_efficiency']:.2%}"
    dropped = located = 0
    for s in manifest["sources"]:
        cells = rows[s["path"]]
        assert cells[3:5] == [f"{s['rows_read']:,}", f"{s['rows_kept']:,}"]
        assert cells[5] == (", ".join(f"{n:,} {r}" for r, n in sorted(s["dropped"].items())) or "0")
        assert cells[6:9] == [
            f"{s['truncated']:,} ({s['truncated_tokens']:,})",
            f"{s['tokens']:,}",
            f"{s['loss_tokens']:,}",
        ]
        ways = sorted(s["turns_located_by"].items(), key=lambda item: -item[1])
        assert " ".join(cells[9:]) == (", ".join(f"{w} {n:,}" for w, n in ways) or "-")
        located += sum(s["turns_located_by"].values())
        dropped += sum(s["dropped"].values())
    assert dropped > 0 and "too_long" in result.output, "the fixture must drop something"
    assert located > 0, "the fixture must hold conversations"
    assert manifest["fingerprint"][:12] in result.output


def test_plot_writes_a_png(build, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "stats.png"
    result = CliRunner().invoke(app, ["stats", str(build), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    data = png.read_bytes()
    assert len(data) > 10_000 and data.startswith(PNG_SIGNATURE)


def test_plot_without_matplotlib_says_how_to_install(build, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    png = tmp_path / "stats.png"
    result = CliRunner().invoke(app, ["stats", str(build), "--plot", str(png)])
    assert result.exit_code == 1 and not png.exists()
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "pip install 'sftprep[plot]'" in result.output


def test_not_a_build(tmp_path):
    result = CliRunner().invoke(app, ["stats", str(tmp_path)])
    assert (
        result.exit_code == 1
        and "manifest.json" in result.output
        and "sftprep build" in result.output
    )
