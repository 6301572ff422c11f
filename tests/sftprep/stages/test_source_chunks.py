"""Chunk descriptors cover their file exactly, and a chunk's rows are iter_rows' rows of that part,
bad rows with the same messages (the file's real line numbers)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sftprep.errors import RowError
from sftprep.stages.source_chunks import chunk_rows, chunk_target, count_rows, plan_chunks
from sftprep.stages.sources import Source, iter_rows


def _as_plain(rows: list) -> list:
    return [(r.reason, r.detail) if isinstance(r, RowError) else r for r in rows]


def _all_chunk_rows(path, kind: str, target: int) -> tuple[list, list]:
    chunks = plan_chunks(str(path), kind, "0" * 64, target)
    return chunks, [row for chunk in chunks for row in chunk_rows(chunk)]


def _jsonl_lines() -> list[bytes]:
    lines = []
    for i in range(300):
        if i % 37 == 5:
            lines.append(b"\n")  # blank lines are not rows, but they count as lines
        elif i % 53 == 7:
            lines.append(b'{"text": "cut off\n')  # malformed: an error naming its line
        elif i % 61 == 3:
            lines.append(b"[1, 2]\r\n")  # not an object
        else:
            text = f"row {i} " + "\u2028" * (i % 3) + "x" * (i * 7 % 90)  # U+2028 is not a line end
            lines.append(json.dumps({"text": text}, ensure_ascii=False).encode() + b"\n")
    return [b"\xef\xbb\xbf" + lines[0], *lines[1:-1], lines[-1].rstrip(b"\n")]


@pytest.mark.parametrize("target", [1, 100, 997, 4096, 1 << 20])
def test_jsonl_chunks_cover_the_file_and_give_its_rows_with_their_line_numbers(tmp_path, target):
    path = tmp_path / "d.jsonl"
    data = b"".join(_jsonl_lines())
    path.write_bytes(data)
    chunks, rows = _all_chunk_rows(path, "jsonl", target)
    assert chunks[0].start == 0 and chunks[-1].end == len(data)
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:]))
    assert all(data[c.start - 1 : c.start] == b"\n" for c in chunks[1:])  # cut on line starts
    assert [c.first_line for c in chunks] == [1 + data[: c.start].count(b"\n") for c in chunks]
    expected = list(iter_rows(Source(str(path), "jsonl")))
    assert _as_plain(rows) == _as_plain(expected)
    errors = [r.detail for r in expected if isinstance(r, RowError)]
    assert len(errors) >= 8 and any("line 8 " in e for e in errors)  # guards: errors were compared
    if target < 1000:
        assert len(chunks) > 10


def test_parquet_and_arrow_chunks_are_ranges_of_row_groups_and_batches(tmp_path):
    table = pa.table({"text": [f"row {i} " + "y" * (i % 50) for i in range(1000)]})
    parquet = tmp_path / "d.parquet"
    pq.write_table(table, parquet, row_group_size=64)
    stream, file_format = tmp_path / "s.arrow", tmp_path / "f.arrow"
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=100):
            writer.write_batch(batch)
    with pa.OSFile(str(file_format), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=70):
            writer.write_batch(batch)
    for path, kind in ((parquet, "parquet"), (stream, "arrow"), (file_format, "arrow")):
        assert count_rows(str(path), kind) == 1000
        chunks, rows = _all_chunk_rows(path, kind, 3000)
        assert len(chunks) > 2, (path, chunks)
        assert rows == list(iter_rows(Source(str(path), kind))) == table.to_pylist()


def test_chunk_size_aims_at_four_chunks_per_worker_within_bounds():
    assert chunk_target(80 << 20, 2, 1 << 18, 16 << 20) == 10 << 20
    assert chunk_target(1 << 10, 2, 1 << 18, 16 << 20) == 1 << 18
    assert chunk_target(1 << 40, 64, 1 << 18, 16 << 20) == 16 << 20


def test_count_rows_counts_the_lines_of_a_jsonl_with_or_without_a_last_newline(tmp_path):
    """The hint --num-proc 0 chooses workers by: a JSONL's lines (blank or bad ones included)."""
    data = b"".join(_jsonl_lines())
    for name, content in (("cut", data), ("ended", data + b"\n"), ("one", b'{"a": 1}')):
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(content)
        assert count_rows(str(path), "jsonl") == content.count(b"\n") + (content[-1:] != b"\n")
    assert count_rows(str(tmp_path / "cut.jsonl"), "jsonl") == 300
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert count_rows(str(tmp_path / "empty.jsonl"), "jsonl") == 0
    assert count_rows(str(tmp_path / "cut.jsonl"), "csv") == 0  # no cheap count: the bytes decide
