"""A build never deletes or replaces what it did not make: the user's files, a source, a
previous build, or a build another process is writing (issue: nothing a user types destroys data)."""

import json
import os
import subprocess
import sys

import pytest

import sftprep
from sftprep.errors import SftprepError
from sftprep.stages.out_guard import build_lock
from tests.conftest import BUNDLED_TOKENIZER, REPO
from tests.sftprep.build_checks import check_build, load_manifest
from tests.sftprep.cli_build import invoke_build

CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def _source(folder, name="train.jsonl", rows=1):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text((json.dumps(CHAT) + "\n") * rows)
    return path


def _cli(cwd, *args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sftprep.cli",
            "build",
            "--tokenizer",
            str(BUNDLED_TOKENIZER),
            "-q",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _build(source, out, **config):
    return sftprep.build(
        {"sources": [str(source)], "tokenizer": str(BUNDLED_TOKENIZER), "out": str(out), **config}
    )


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_the_current_folder_with_overwrite_is_refused_and_the_users_files_stay(tmp_path):
    source = _source(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = _files(tmp_path)
    result = _cli(tmp_path, str(source), "--out", ".", "--overwrite")
    assert result.returncode == 1 and "current folder" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert _files(tmp_path) == before


@pytest.mark.parametrize("where", ["the source's folder", "a folder above the source"])
def test_a_folder_holding_a_source_is_refused(tmp_path, where):
    source = _source(tmp_path / "data" / "sub")
    out = source.parent if where == "the source's folder" else tmp_path / "data"
    with pytest.raises(SftprepError, match="holds the source"):
        _build(source, out, overwrite=True)
    assert source.read_text()


def test_a_folder_inside_a_source_folder_is_refused(tmp_path):
    import pyarrow as pa
    from datasets import Dataset

    saved = tmp_path / "saved"
    Dataset.from_list([CHAT]).save_to_disk(str(saved))
    with pytest.raises(SftprepError, match="inside the source folder"):
        _build(saved, saved / "build")
    assert pa is not None and (saved / "state.json").is_file()


def test_a_file_or_a_path_under_a_file_is_refused(tmp_path):
    source = _source(tmp_path)
    other = tmp_path / "other.txt"
    other.write_text("mine")
    with pytest.raises(SftprepError, match="is a file"):
        _build(source, other, overwrite=True)
    with pytest.raises(SftprepError, match="which is a file"):
        _build(source, other / "build")
    assert other.read_text() == "mine"


def test_overwrite_replaces_a_build_but_never_a_file_the_build_did_not_write(tmp_path):
    out = tmp_path / "out"
    _build(_source(tmp_path / "a"), out)
    (out / "README.txt").write_text("my notes about this build")
    first = load_manifest(out)
    with pytest.raises(SftprepError, match=r"1 file\(s\) no sftprep build wrote \(README.txt\)"):
        _build(_source(tmp_path / "b", rows=2), out, overwrite=True)
    assert (out / "README.txt").read_text() and load_manifest(out) == first
    (out / "README.txt").unlink()
    _build(_source(tmp_path / "b", rows=2), out, overwrite=True)
    assert load_manifest(out)["sources"][0]["rows_read"] == 2
    check_build(out)
    assert not list(tmp_path.glob(".out.*")), "no lock or temporary folder is left beside --out"


def test_a_second_build_into_the_same_out_is_refused_while_one_is_running(tmp_path):
    out = tmp_path / "out"
    source = _source(tmp_path / "a")
    with build_lock(out):  # another build holds it (this process, pid written in the lock)
        result = _cli(tmp_path, str(source), "--out", str(out))
        assert result.returncode == 1 and f"another process (pid {os.getpid()})" in result.stderr
        assert not out.exists()
    _build(source, out)  # released: the next one runs
    check_build(out)


def test_a_build_killed_between_its_two_renames_counts_as_the_previous_build(tmp_path):
    out = tmp_path / "out"
    _build(_source(tmp_path / "a"), out)
    first = load_manifest(out)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    os.replace(out, tmp_path / f".out.old-{int(dead.stdout)}")  # killed after moving it aside
    with pytest.raises(SftprepError, match="already holds a different build"):
        _build(_source(tmp_path / "b", rows=2), out)  # not replaced without --overwrite
    assert load_manifest(out) == first


def test_a_failed_build_leaves_no_folder_it_created(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"messages": [{"role": "user", "content": "no reply"}]}) + "\n")
    with pytest.raises(SftprepError):
        _build(empty, tmp_path / "new" / "parent" / "build", on_error="skip")
    assert not (tmp_path / "new").exists()


def test_a_full_disk_is_one_line_and_the_previous_build_survives(tmp_path, monkeypatch):
    import errno

    import sftprep.pipeline

    out = tmp_path / "out"
    _build(_source(tmp_path / "a"), out)
    first = load_manifest(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out) + ".tmp/train/00000.arrow")

    monkeypatch.setattr(sftprep.pipeline, "write_split", full)
    source = _source(tmp_path / "b", rows=2)
    result = invoke_build(source, out, "--overwrite")
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    assert load_manifest(out) == first and not list(tmp_path.glob(".out.*"))
