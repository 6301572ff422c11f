"""The bad-input corpus in tests/data/bad: each file stops the build with one line naming the file,
the row and the fix, leaving no output; with --on-error skip, row problems are counted by reason."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sftprep.cli import app
from tests.conftest import BUNDLED_TOKENIZER, REPO
from tests.sftprep.build_checks import check_build, load_manifest
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
    files = {p.name for p in BAD.iterdir()} - {"expected.json", "alternating.jinja"}
    assert files == set(EXPECTED) and len(files) >= 15


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_file_stops_the_build_with_one_clear_line_with_or_without_workers(tmp_path, name):
    expected = EXPECTED[name]
    lines = []
    for num_proc in (1, 2):
        result = invoke(tmp_path / "out", name, num_proc=num_proc)
        assert result.exit_code == 1, result.output
        line = result.output.strip()
        assert "\n" not in line and line.startswith("error: ") and "Traceback" not in line
        assert name in line and expected["says"] in line
        if expected["row"] is not None:
            assert f"row {expected['row']}:" in line and f"[{expected['reason']}]" in line
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
        lines.append(line)
    assert lines[0] == lines[1]


@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if e["row"] is not None))
def test_skip_drops_the_bad_row_counts_it_and_completes_with_or_without_workers(tmp_path, name):
    builds = {}
    for num_proc in (1, 2):
        out = tmp_path / f"out{num_proc}"
        result = invoke(out, name, "--on-error", "skip", num_proc=num_proc)
        assert result.exit_code == 0, result.output
        manifest = load_manifest(out)
        assert manifest["dropped"] == {EXPECTED[name]["reason"]: 1}
        assert manifest["sources"][0]["rows_kept"] >= 1
        check_build(out)
        builds[num_proc] = (out, manifest)
    (one, m1), (two, m2) = builds[1], builds[2]
    assert (
        m1["fingerprint"] == m2["fingerprint"]
        and m1["sources"] == m2["sources"]
        and m1["splits"] == m2["splits"]
    )
    for shard in m1["splits"]["train"]["shards"]:
        assert (one / shard["path"]).read_bytes() == (two / shard["path"]).read_bytes()


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


def _big_source(tmp_path) -> Path:
    row = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "Tell me about packing. " * 20},
                {"role": "assistant", "content": "Packing puts rows together. " * 40},
            ]
        }
    )
    src = tmp_path / "big.jsonl"
    src.write_text((row + "\n") * 20000)
    return src


def _group_gone(pgid: int, wait_s: float = 10.0) -> bool:
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_an_interrupted_build_leaves_the_previous_build_intact_and_a_rerun_completes(tmp_path, sig):
    out = tmp_path / "out"
    small = tmp_path / "small.jsonl"
    small.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        )
        + "\n"
    )
    base = [
        sys.executable,
        "-m",
        "sftprep.cli",
        "build",
        "--tokenizer",
        str(BUNDLED_TOKENIZER),
        "--out",
        str(out),
        "-q",
        "--num-proc",
        "2",
    ]
    subprocess.run(base + [str(small)], check=True, cwd=REPO)
    before = load_manifest(out)
    big = _big_source(tmp_path)
    proc = subprocess.Popen(
        base + [str(big), "--overwrite"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while not list(tmp_path.glob(".out.tmp-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # wait until the build is writing (its temporary folder exists)
    time.sleep(0.2)
    assert proc.poll() is None, (
        "the build finished before it could be interrupted; make the input bigger"
    )
    os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig != signal.SIGKILL:
        assert _group_gone(proc.pid), "worker processes outlived the interrupted build"
        assert (
            stderr.strip().count("\n") == 0
            and "interrupted" in stderr
            and "Traceback" not in stderr
        )
    assert load_manifest(out)["fingerprint"] == before["fingerprint"]
    check_build(out)
    subprocess.run(base + [str(big), "--overwrite"], check=True, cwd=REPO)
    assert load_manifest(out)["sources"][0]["rows_read"] == 20000
    assert not list(tmp_path.glob(".out.*")), "stale temporary folders are cleaned up"
