"""Worker processes read their own chunks of a JSONL or Parquet file (pipeline.WORKER_CHUNK_BYTES):
the build process parses no row beyond the one that detects the format, and the build is the one
of a single process and of workers sent rows by the build process: same shards, same drops by
reason, and a bad row reported at the same line."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.manifest import read_manifest
from sftprep import build, pipeline
from sftprep.errors import SftprepError
from sftprep.stages import sources
from tests.conftest import BUNDLED_TOKENIZER

pytestmark = pytest.mark.slow  # three builds each, two of them with a worker pool

BAD_LINES = {57: "{not json", 133: json.dumps({"messages": 3}), 301: json.dumps({"messages": []})}


def _rows() -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"question {i} " + "word " * (i % 40) + "ü日本"},
                {"role": "assistant", "content": f"answer {i} " + "more " * (i % 25)},
            ]
        }
        for i in range(420)
    ]


def _jsonl(tmp_path):
    lines = [json.dumps(r) for r in _rows()]
    for number, line in BAD_LINES.items():
        lines[number - 1] = line
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _parquet(tmp_path):
    path = tmp_path / "chats.parquet"
    pq.write_table(pa.Table.from_pylist(_rows()), path, row_group_size=40)
    return path


def _build(tmp_path, source, name, monkeypatch, how, **extra):
    """how: one (a single process), own (workers read their chunks), sent (rows sent to workers)."""
    out = tmp_path / name
    with monkeypatch.context() as m:
        m.setattr(pipeline, "WORKER_CHUNK_BYTES", (2048, 2048))  # a file of many chunks
        m.setattr(pipeline, "CHUNK_ROWS", 64)  # and as many chunks of rows sent
        if how == "sent":
            m.setattr(pipeline, "SPLITTABLE", ())
        config = {"sources": [str(source)], "tokenizer": str(BUNDLED_TOKENIZER), "out": str(out)}
        config |= {"max_length": 256, "num_proc": 1 if how == "one" else 2, **extra}
        manifest = build(config)
    assert manifest["workers"] == (1 if how == "one" else 2)
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.arrow"))}


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_workers_reading_their_own_chunks_build_what_one_process_builds(
    tmp_path, kind, monkeypatch
):
    source = (_jsonl if kind == "jsonl" else _parquet)(tmp_path)
    parsed_here = []
    real = sources.jsonl_rows

    def counting(*args, **kwargs):
        for row in real(*args, **kwargs):
            parsed_here.append(1)
            yield row

    built = {}
    for how in ("one", "sent", "own"):
        with monkeypatch.context() as m:
            m.setattr(sources, "jsonl_rows", counting)
            parsed_here.clear()
            built[how] = _build(tmp_path, source, how, monkeypatch, how, on_error="skip")
            if kind == "jsonl":
                assert len(parsed_here) == (1 if how == "own" else 420), how
    assert built["one"] and built["own"] == built["one"] and built["sent"] == built["one"]
    manifests = {how: read_manifest(tmp_path / how) for how in built}
    assert manifests["own"].dropped == manifests["one"].dropped == manifests["sent"].dropped
    assert manifests["own"].sources == manifests["one"].sources
    if kind == "jsonl":
        assert sum(manifests["one"].dropped.values()) == len(BAD_LINES)


def test_a_bad_row_read_by_a_worker_names_its_line_in_the_file(tmp_path, monkeypatch):
    source = _jsonl(tmp_path)
    errors = {}
    for how in ("one", "own"):
        with pytest.raises(SftprepError) as err:
            _build(tmp_path, source, how, monkeypatch, how, on_error="raise")
        errors[how] = str(err.value)
    assert "57" in errors["one"] and errors["own"] == errors["one"]
