"""Readers refuse what they cannot read faithfully, in one line naming the file: never a silently
lost column, never a traceback, never a manifest that describes other bytes than those built."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sftprep
import sftprep.pipeline
from sftprep.errors import ConfigError, SftprepError
from tests.conftest import BUNDLED_TOKENIZER

TEXTS = [{"text": f"hello world {i}"} for i in range(2000)]


def _build(source, tmp_path, **config):
    return sftprep.build(
        {
            "sources": [str(source)],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(tmp_path / "out"),
            **config,
        }
    )


def _refused(source, tmp_path, needle):
    with pytest.raises(SftprepError) as err:
        _build(source, tmp_path)
    message = str(err.value)
    assert needle in message and "\n" not in message, message
    assert not (tmp_path / "out").exists()


def test_a_parquet_file_with_two_columns_of_one_name_loses_neither(tmp_path):
    path = tmp_path / "dup.parquet"
    table = pa.table(
        [pa.array(["a"]), pa.array(["b"]), pa.array(["c"])],
        names=["prompt", "completion", "prompt"],
    )
    pq.write_table(table, path)
    _refused(path, tmp_path, "duplicate column names prompt")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_damaged_parquet_file_is_one_line(tmp_path, cut):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": [t["text"] for t in TEXTS]}), good, data_page_size=1024)
    data = bytearray(good.read_bytes())
    at = int(len(data) * cut) // 2
    data[at : at + 64] = b"\xff" * 64
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    with pytest.raises(SftprepError) as err:
        _build(bad, tmp_path)
    assert "bad.parquet" in str(err.value) and "\n" not in str(err.value)


def test_a_truncated_arrow_stream_is_one_line(tmp_path):
    path = tmp_path / "t.arrow"
    with pa.OSFile(str(path), "wb") as handle:
        writer = pa.ipc.new_stream(handle, pa.schema([("text", pa.string())]))
        for start in range(0, len(TEXTS), 100):
            writer.write_table(pa.table({"text": [t["text"] for t in TEXTS[start : start + 100]]}))
        writer.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path, tmp_path, "t.arrow: the Arrow file is damaged or cut short")


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: (d / "state.json").write_text("{oops"), "state.json: not valid JSON"),
        (lambda d: (d / "state.json").write_text("[]"), "no `_data_files` list"),
        (lambda d: [p.unlink() for p in d.glob("*.arrow")], "which the folder lacks"),
    ],
)
def test_a_broken_save_to_disk_folder_is_one_line(tmp_path, damage, needle):
    from datasets import Dataset

    folder = tmp_path / "saved"
    Dataset.from_list(TEXTS[:10]).save_to_disk(str(folder))
    damage(folder)
    _refused(folder, tmp_path, needle)


def test_a_source_written_while_the_build_reads_it_fails_the_build(tmp_path, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in TEXTS[:50]))
    read = sftprep.pipeline._read_source

    def read_then_append(*args):
        read(*args)
        with open(path, "a") as handle:  # another process appends as the build finishes reading
            handle.write(json.dumps(TEXTS[0]) + "\n")
        os.utime(path)

    monkeypatch.setattr(sftprep.pipeline, "_read_source", read_then_append)
    _refused(path, tmp_path, "changed while the build read it")


def test_a_negative_seed_is_a_config_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(TEXTS[0]) + "\n")
    with pytest.raises(ConfigError, match="--seed is -1; it must be 0 or more"):
        _build(path, tmp_path, seed=-1)


def test_a_csv_quote_left_open_does_not_swallow_the_rows_after_it(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('prompt,completion\na,b\nc,"d\ne,f\ng,h\n')
    with pytest.raises(
        SftprepError, match="row 1: line 3: a quoted field opens in this record and never closes"
    ):
        _build(path, tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text('prompt,completion\na,b\nc,"d"x\ne,f\n')
    manifest = _build(bad, tmp_path, on_error="skip")
    assert manifest["dropped"] == {"malformed_csv": 1} and manifest["sources"][0]["rows_read"] == 3
