"""write_split: rows come back in order from shards of about the asked size, each entry's counts
and sha256 are its file's; a write that fails in the writer thread is raised, with no thread left."""

import threading

import numpy as np
import pyarrow as pa
import pytest

from schemas.manifest import file_sha256
from sftprep.stages import shards
from sftprep.stages.shards import write_split


def _rows(n: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(1, 300))
        mask = (rng.random(length) < 0.5).astype(np.uint8)
        out.append((rng.integers(0, 1000, length).astype(np.int32), mask, [length], [i]))
    return out


def test_rows_come_back_in_order_and_entries_match_their_files(tmp_path):
    rows = _rows(3000)
    entries = write_split(tmp_path, "train", iter(rows), shard_size_bytes=200_000)
    assert len(entries) > 3  # several shards, several batches each (BATCH_ROWS rows)
    back = []
    for entry in entries:
        path = tmp_path / entry.path
        assert entry.sha256 == file_sha256(path) and entry.bytes == path.stat().st_size
        table = pa.ipc.open_stream(pa.OSFile(str(path))).read_all()
        assert table.num_rows == entry.rows
        ids = table.column("input_ids").to_pylist()
        masks = table.column("loss_mask").to_pylist()
        assert entry.tokens == sum(map(len, ids)) and entry.loss_tokens == sum(map(sum, masks))
        back += list(zip(ids, masks))
    assert [(r[0].tolist(), r[1].tolist()) for r in rows] == back


def test_a_failed_write_is_raised_and_no_thread_is_left(tmp_path, monkeypatch):
    real = pa.ipc.new_stream
    calls = []

    class Failing:
        def __init__(self, stream):
            self.stream = stream

        def write_batch(self, batch):
            calls.append(1)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")
            self.stream.write_batch(batch)

        def close(self):
            self.stream.close()

    monkeypatch.setattr(shards.pa.ipc, "new_stream", lambda *a: Failing(real(*a)))
    with pytest.raises(OSError, match="No space left"):
        write_split(tmp_path, "train", iter(_rows(5000)), shard_size_bytes=1 << 30)
    assert len(calls) < 3 + shards.WRITES_AHEAD + 2  # stopped soon after, not at the end
    alive = [t.name for t in threading.enumerate() if t.name.startswith("shard-")]
    assert not alive
