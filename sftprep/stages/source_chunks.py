"""Chunks of a source that a worker, possibly on another machine, reads itself: the build process
plans descriptors (which file, which bytes or row groups), never rows; `chunk_rows` reads one.

JSON lines split on line starts (a byte range, carrying the number of its first line so that row
errors name the file's real line), Parquet on row groups, Arrow on record batches; each chunk is
about `target` bytes, so that no chunk is much larger than the rest. A chunk's rows come out
exactly as `sources.iter_rows` gives them for that part of the file. Other kinds (a JSON array,
CSV, save_to_disk folders, hub datasets) have no cheap split: the caller reads and sends their rows.

    file of 10 lines, 100 bytes, target 40 -> bytes [0, 43) lines 1-4, [43, 88) lines 5-9, [88, 100) line 10
"""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from sftprep.errors import RowError, SftprepError
from sftprep.stages.sources import (
    BATCH_ROWS,
    arrow_batches,
    arrow_damaged,
    jsonl_rows,
    open_parquet,
    parquet_damaged,
    read_or_refuse,
    refuse_duplicate_columns,
)

SPLITTABLE = ("jsonl", "parquet", "arrow")
BLOCK = 1 << 20


@dataclass(frozen=True)
class ChunkDescriptor:
    """One chunk of a source file: what a worker needs to read it and nothing more."""

    path: str
    kind: str
    """jsonl | parquet | arrow"""
    content_sha256: str
    """Of the whole file when it was planned (the build checks it did not change)."""
    chunk_id: int
    """Position of the chunk in its source, from 0: results are consumed in this order."""
    start: int
    """jsonl: first byte; parquet: first row group; arrow: first record batch."""
    end: int
    """One past the last byte, row group or record batch."""
    first_line: int = 1
    """jsonl: the number of the range's first line (1 for the first chunk)."""


def plan_chunks(path: str, kind: str, content_sha256: str, target: int) -> list[ChunkDescriptor]:
    """The chunks of one file, in order, together covering it exactly."""
    planner = {"jsonl": _jsonl_ranges, "parquet": _parquet_ranges, "arrow": _arrow_ranges}[kind]
    return [
        ChunkDescriptor(path, kind, content_sha256, i, start, end, line)
        for i, (start, end, line) in enumerate(planner(path, target))
    ]


def _jsonl_ranges(path: str, target: int) -> list[tuple[int, int, int]]:
    """(start, end, first line) byte ranges cut at the first line start at or after each
    `target` bytes; the newlines are counted on the way (one pass at disk speed)."""
    ranges, start, line, at, newlines = [], 0, 1, 0, 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            done = 0  # bytes of this block already counted
            while (cut := start + target - at) < len(block):
                newline = block.find(b"\n", max(cut, done))
                if newline < 0:
                    break
                newlines += block.count(b"\n", done, newline + 1)
                ranges.append((start, at + newline + 1, line))
                start, line, newlines = at + newline + 1, line + newlines, 0
                done = newline + 1
            newlines += block.count(b"\n", done)
            at += len(block)
    if start < at or not ranges:
        ranges.append((start, at, line))
    return ranges


def _grouped(sizes: list[int], target: int) -> list[tuple[int, int, int]]:
    """Consecutive parts (row groups, record batches) gathered into ranges of about `target` bytes."""
    ranges, start, size = [], 0, 0
    for i, part in enumerate(sizes):
        size += part
        if size >= target:
            ranges.append((start, i + 1, 1))
            start, size = i + 1, 0
    if start < len(sizes) or not ranges:
        ranges.append((start, len(sizes), 1))
    return ranges


def _parquet_ranges(path: str, target: int) -> list[tuple[int, int, int]]:
    meta = open_parquet(path).metadata
    return _grouped([meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)], target)


def _arrow_ranges(path: str, target: int) -> list[tuple[int, int, int]]:
    batches = read_or_refuse(arrow_batches(path, mapped=True), arrow_damaged(path))
    return _grouped([batch.nbytes for batch in batches], target)


def chunk_rows(chunk: ChunkDescriptor) -> list[dict | RowError]:
    """The rows of one chunk, as `iter_rows` gives them (a bad row as a RowError in its place)."""
    if chunk.kind == "jsonl":
        return list(jsonl_rows(chunk.path, chunk.start, chunk.end, chunk.first_line))
    if chunk.kind == "parquet":
        batches = open_parquet(chunk.path).iter_batches(
            batch_size=BATCH_ROWS, row_groups=list(range(chunk.start, chunk.end))
        )
        damaged = parquet_damaged(chunk.path)
        return [row for batch in read_or_refuse(batches, damaged) for row in batch.to_pylist()]
    rows = []
    batches = itertools.islice(arrow_batches(chunk.path, mapped=True), chunk.start, chunk.end)
    for batch in read_or_refuse(batches, arrow_damaged(chunk.path)):
        refuse_duplicate_columns(chunk.path, batch.schema.names)
        rows += batch.to_pylist()
    return rows


def count_rows(path: str, kind: str) -> int:
    """Rows of a JSONL (its lines), Parquet or Arrow file (their metadata), counted without
    parsing any; 0 for other kinds. A hint for choosing workers, not the build's count."""
    if kind == "jsonl":
        lines, last = 0, b"\n"
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                lines, last = lines + block.count(b"\n"), block[-1:]
        return lines + (last != b"\n")
    if kind == "parquet":
        return open_parquet(path).metadata.num_rows
    if kind == "arrow":
        batches = arrow_batches(path, mapped=True)
        return sum(batch.num_rows for batch in read_or_refuse(batches, arrow_damaged(path)))
    return 0


def in_file_order(replies: Iterator) -> Iterator:
    """Workers' replies for consecutive chunks, (rows read, PackedResults numbered within the
    chunk), as PackedResults numbered in the file; a reply that is a SftprepError (the file could
    not be read) is raised. Closing this closes `replies` at once (a worker pool stops with it)."""
    start = 0
    try:
        for reply in replies:
            if isinstance(reply, SftprepError):
                raise reply
            read, results = reply
            yield results.shifted(start)
            start += read
    finally:
        replies.close()


def chunk_target(total_bytes: int, workers: int, low: int, high: int, per_worker: int = 4) -> int:
    """Bytes per chunk: about `per_worker` chunks per worker, within [low, high]."""
    return max(low, min(high, total_bytes // max(1, workers * per_worker)))
