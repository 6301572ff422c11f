"""Make every build in a test go through the worker pool, row by row."""

import sftprep.pipeline


def force_worker_pool(monkeypatch) -> None:
    """One row per chunk (a line per chunk where workers read JSONL themselves), the pool for any number of chunks, and the in-process path disabled
    (so a test that passes proves the pool ran)."""
    monkeypatch.setattr(sftprep.pipeline, "CHUNK_ROWS", 1)
    monkeypatch.setattr(sftprep.pipeline, "WORKER_CHUNK_BYTES", (1, 1))  # a line a chunk
    monkeypatch.setattr(sftprep.pipeline, "POOL_MIN_CHUNKS", 1)
    monkeypatch.setattr(sftprep.pipeline, "pipelined", None)
