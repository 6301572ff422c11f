"""The bad-input corpus in tests/data/bad: each file stops the build with one line naming the file,
the row and the fix, leaving no output; with --on-error skip, row problems are counted by reason."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sftprep.cli import app
from tests.conftest import BUNDLED_TOKENIZER, REPO
from tests.sftprep.build_checks import check_build, examples_by_id, load_manifest
from tests.sftprep.cli_build import invoke_build
from tests.sftprep.worker_pool import force_worker_pool

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
EXPECTED = json.loads((BAD / "expected.json").read_text())
runner = CliRunner()


def invoke(out, name, *extra, num_proc=1):
    """Build one corpus file; with num_proc=2 every row is its own chunk, sent to worker processes."""
    args = [
        "build",
        str(BAD / name),
        "--tokenizer",
        str(BUNDLED_TOKENIZER),
        "--out",
        str(out),
        "-q",
        "--num-proc",
        str(num_proc),
    ]
    if "chat_template" in EXPECTED[name]:
        args += ["--chat-template", str(BAD / EXPECTED[name]["chat_template"])]
    if num_proc == 1:
        return runner.invoke(app, args + list(extra))
    with pytest.MonkeyPatch.context() as m:
        force_worker_pool(m)
        return runner.invoke(app, args + list(extra))


def test_the_corpus_is_complete():
    templates = {e["chat_template"] for e in EXPECTED.values() if "chat_template" in e}
    files = {p.name for p in BAD.iterdir()} - {"expected.json"}
    assert files - templates == set(EXPECTED) and templates <= files and len(EXPECTED) >= 29


ROW_ERRORS = sorted(n for n, e in EXPECTED.items() if e["row"] is not None)
WORKERS = [1, pytest.param(2, marks=pytest.mark.slow)]
"""In-process, and (slow tier: each build starts a pool) in worker processes, compared with in-process."""


@pytest.mark.parametrize("num_proc", WORKERS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_file_stops_the_build_with_one_clear_line_with_or_without_workers(
    tmp_path, name, num_proc
):
    expected = EXPECTED[name]
    lines = []
    for procs in sorted({1, num_proc}):
        result = invoke(tmp_path / "out", name, num_proc=procs)
        assert result.exit_code == 1, result.output
        line = result.output.strip()
        assert "\n" not in line and line.startswith("error: ") and "Traceback" not in line
        assert name in line and expected["says"] in line
        if expected["row"] is not None:
            assert f"row {expected['row']}:" in line and f"[{expected['reason']}]" in line
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
        lines.append(line)
    assert len(set(lines)) == 1


@pytest.mark.parametrize("num_proc", WORKERS)
@pytest.mark.parametrize("name", ROW_ERRORS)
def test_skip_drops_the_bad_row_counts_it_and_completes_with_or_without_workers(
    tmp_path, name, num_proc
):
    builds = []
    for procs in sorted({1, num_proc}):
        out = tmp_path / f"out{procs}"
        result = invoke(out, name, "--on-error", "skip", num_proc=procs)
        assert result.exit_code == 0, result.output
        manifest = load_manifest(out)
        assert manifest["dropped"] == {EXPECTED[name]["reason"]: 1}
        assert manifest["sources"][0]["rows_kept"] >= 1
        check_build(out)
        builds.append((out, manifest))
    (one, m1), (other, m2) = builds[0], builds[-1]
    assert (
        m1["fingerprint"] == m2["fingerprint"]
        and m1["sources"] == m2["sources"]
        and m1["splits"] == m2["splits"]
    )
    for shard in m1["splits"]["train"]["shards"]:
        assert (one / shard["path"]).read_bytes() == (other / shard["path"]).read_bytes()


LINE_ERRORS = [
    n for n in ROW_ERRORS if n.endswith(".jsonl") and b"" not in (BAD / n).read_bytes().splitlines()
]


@pytest.mark.parametrize("name", LINE_ERRORS)
def test_a_skipped_row_changes_nothing_another_row_trains(tmp_path, name):
    """With --on-error skip, every other row trains exactly what it trains when the bad line is
    not in the file at all: same ids, same mask, example by example (ids shift by one after it)."""
    lines = (BAD / name).read_bytes().splitlines(keepends=True)
    row = EXPECTED[name]["row"]
    clean = tmp_path / name
    clean.write_bytes(b"".join(lines[:row] + lines[row + 1 :]))
    skipped = invoke(tmp_path / "skipped", name, "--on-error", "skip")
    assert skipped.exit_code == 0, skipped.output
    args = ["--num-proc", "1"]
    if "chat_template" in EXPECTED[name]:
        args += ["--chat-template", str(BAD / EXPECTED[name]["chat_template"])]
    assert invoke_build(clean, tmp_path / "clean", *args).exit_code == 0
    with_bad = examples_by_id(tmp_path / "skipped")
    without = examples_by_id(tmp_path / "clean")
    shifted = {i - (i > row): example for i, example in with_bad.items()}
    assert shifted == without and len(without) == len(lines) - 1


def test_a_worker_that_dies_stops_the_build_with_one_line_not_a_hang(tmp_path):
    """A worker killed mid-build (here by SIGKILL from a formatter, as the OOM killer would) must
    fail the build at once; multiprocessing.Pool.imap used to wait forever for the lost chunk."""
    src = tmp_path / "d.jsonl"
    rows = [{"q": "question", "a": "answer"}] * 3000
    rows[2500] = {"q": "die", "a": "answer"}
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [
        sys.executable,
        "-m",
        "sftprep.cli",
        "build",
        str(src),
        "--tokenizer",
        str(BUNDLED_TOKENIZER),
        "--out",
        str(tmp_path / "out"),
    ]
    cmd += ["-q", "--num-proc", "2", "--formatter", "tests.sftprep.formatters:sigkill_on_die"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip()
    assert (
        "\n" not in line
        and "Traceback" not in line
        and "worker process died" in line
        and str(src) in line
    )
    assert "--num-proc 1" in line
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_a_huge_single_line_is_truncated_not_fatal(tmp_path):
    src = tmp_path / "huge.jsonl"
    src.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q " * 5},
                    {"role": "assistant", "content": "word " * 400_000},
                ]
            }
        )
        + "\n"
    )
    result = runner.invoke(
        app,
        [
            "build",
            str(src),
            "--tokenizer",
            str(BUNDLED_TOKENIZER),
            "--out",
            str(tmp_path / "out"),
            "-q",
            "--num-proc",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    source = load_manifest(tmp_path / "out")["sources"][0]
    assert source["truncated"] == 1 and source["truncated_tokens"] > 300_000
