"""Write packed rows as Arrow IPC stream shards, and a build folder atomically.

A build is written into a hidden temporary folder beside the target and renamed into place after
`manifest.json` (written last), so a reader never sees a half-written build, and an interrupted
build leaves the previous one intact.
"""

import os
import shutil
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas import row_schema, shard_name
from schemas.manifest import ShardEntry, file_sha256

BATCH_ROWS = 512
WRITES_AHEAD = 4  # Arrow batches (~5 MB each at 2048 tokens a row) queued for the writer at most
BYTES_PER_TOKEN = 5  # int32 id + uint8 mask
_NUMPY_TYPES = {pa.int32(): np.int32, pa.int64(): np.int64, pa.uint8(): np.uint8}


def _numpy_array(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A zero-copy Arrow array over a numpy buffer (pa.array() would import pandas to check for Series)."""
    values = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[value_type])
    return pa.Array.from_buffers(value_type, len(values), [None, pa.py_buffer(values)])


def _list_array(parts: list[np.ndarray], value_type: pa.DataType) -> pa.Array:
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int32, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(parts) if parts else np.zeros(0)
    return pa.ListArray.from_arrays(
        _numpy_array(offsets, pa.int32()), _numpy_array(values, value_type)
    )


def _record_batch(rows: list) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
    """The rows as one Arrow batch, with each row's token count and loss token count."""
    ids = [r[0] for r in rows]
    masks = [r[1] for r in rows]
    lengths = np.fromiter((len(i) for i in ids), dtype=np.int32, count=len(ids))
    losses = np.fromiter((int(m.sum()) for m in masks), dtype=np.int32, count=len(masks))
    batch = pa.RecordBatch.from_arrays(
        [
            _list_array(ids, pa.int32()),
            _list_array(masks, pa.uint8()),
            _list_array([np.asarray(r[2], dtype=np.int32) for r in rows], pa.int32()),
            _list_array([np.asarray(r[3], dtype=np.int64) for r in rows], pa.int64()),
            _numpy_array(lengths, pa.int32()),
            _numpy_array(losses, pa.int32()),
        ],
        schema=row_schema(),
    )
    return batch, lengths, losses


def write_split(
    build_dir: Path, split: str, rows: Iterable[tuple], shard_size_bytes: int
) -> list[ShardEntry]:
    """Write rows (input_ids, loss_mask, seq_lens, example_ids) into shards; return their manifest
    entries. This thread reads the rows back and builds the Arrow batches; one thread writes them
    and another hashes each finished shard (both release the GIL: Arrow's writer and hashlib), so
    the three overlap instead of running one after another on one core with the other idle."""
    folder = build_dir / split
    folder.mkdir(parents=True, exist_ok=True)
    shards = _ShardWriter(folder, split, shard_size_bytes)
    try:
        pending: list = []
        for row in rows:
            pending.append(row)
            if len(pending) >= BATCH_ROWS:
                shards.add(pending)
                pending = []
        if pending:
            shards.add(pending)
        entries = shards.finish()
    finally:  # also on an error or Ctrl-C: nothing is left writing into the folder
        shards.stop()
    if not entries:  # an empty split still has one (empty) shard, so readers need no special case
        path = folder / shard_name(0)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, row_schema()):
            pass
        entries.append(_shard_entry(split, path, 0, 0, 0))
    return entries


class _ShardWriter:
    """Batches of rows into shards of about shard_size_bytes: written by one thread, hashed by
    another, at most WRITES_AHEAD batches queued; a failed write is raised once the queue is
    full or the shard closes, never lost."""

    def __init__(self, folder: Path, split: str, shard_size_bytes: int):
        self.folder, self.split, self.shard_size_bytes = folder, split, shard_size_bytes
        self.entries: list = []  # futures of each closed shard's ShardEntry, in shard order
        self.writes: deque = deque()  # futures of the batches being written, oldest first
        self.writer_thread = ThreadPoolExecutor(1, thread_name_prefix="shard-writer")
        self.hasher_thread = ThreadPoolExecutor(1, thread_name_prefix="shard-hasher")
        self.open: tuple | None = None  # (path, sink, stream writer) of the shard being written
        self.counts = [0, 0, 0]  # rows, tokens, loss tokens of that shard

    def add(self, rows: list) -> None:
        """One Arrow batch of `rows` into the current shard (a new one if none is open)."""
        if self.open is None:
            path = self.folder / shard_name(len(self.entries))
            sink = pa.OSFile(str(path), "wb")
            self.open = (path, sink, pa.ipc.new_stream(sink, row_schema()))
        batch, lengths, losses = _record_batch(rows)
        self.writes.append(self.writer_thread.submit(self.open[2].write_batch, batch))
        while len(self.writes) > WRITES_AHEAD:
            self.writes.popleft().result()
        tokens = int(lengths.sum(dtype=np.int64))
        self.counts[0] += len(rows)
        self.counts[1] += tokens
        self.counts[2] += int(losses.sum(dtype=np.int64))
        if self.counts[1] * BYTES_PER_TOKEN >= self.shard_size_bytes:
            self._close_shard()

    def finish(self) -> list[ShardEntry]:
        """Close the last shard; every shard's entry, once written and hashed."""
        self._close_shard()
        return [entry.result() for entry in self.entries]

    def stop(self) -> None:
        """Wait for the threads (what is queued and not started is dropped)."""
        self.writer_thread.shutdown(wait=True, cancel_futures=True)
        self.hasher_thread.shutdown(wait=True, cancel_futures=True)

    def _close_shard(self) -> None:
        if self.open is None:
            return
        path, sink, stream = self.open
        closed = self.writer_thread.submit(_close, stream, sink)
        while self.writes:
            self.writes.popleft().result()
        closed.result()
        self.entries.append(self.hasher_thread.submit(_shard_entry, self.split, path, *self.counts))
        self.open, self.counts = None, [0, 0, 0]


def _close(stream, sink) -> None:
    stream.close()
    sink.close()


def _shard_entry(split: str, path: Path, rows: int, tokens: int, loss_tokens: int) -> ShardEntry:
    size = path.stat().st_size
    return ShardEntry(f"{split}/{path.name}", rows, tokens, loss_tokens, size, file_sha256(path))


@contextmanager
def atomic_build_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it replaces `target`, on failure it is removed."""
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_interrupted(target: Path) -> None:
    """Undo what killed builds left beside `target` (see _remove_stale); call it before looking at
    `target`, so a build killed between its two renames counts as the previous build, intact."""
    _remove_stale(target.resolve())


def _remove_stale(target: Path) -> None:
    """Clean up after builds that were killed (SIGKILL, power loss) beside `target`.

    A dead build's temporary folder is removed. A dead build's `.old` folder is the previous build,
    moved aside just before the final rename: it is put back if the target is missing, else removed.
    """
    for suffix in (".old", ".tmp"):
        for path in sorted(target.parent.glob(f".{target.name}{suffix}-*")):
            pid = path.name.rpartition("-")[2]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            if suffix == ".old" and not target.exists():
                os.replace(path, target)
            else:
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
