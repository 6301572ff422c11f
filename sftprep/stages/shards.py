"""Write packed rows as Arrow IPC stream shards, and a build folder atomically.

A build is written into a hidden temporary folder beside the target and renamed into place after
`manifest.json` (written last), so a reader never sees a half-written build, and an interrupted
build leaves the previous one intact.
"""

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas import row_schema, shard_name
from schemas.manifest import ShardEntry, file_sha256

BATCH_ROWS = 512
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
    """Write rows (input_ids, loss_mask, seq_lens, example_ids) into shards; return their manifest entries."""
    folder = build_dir / split
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[ShardEntry] = []
    pending: list = []
    state = {"writer": None, "path": None, "rows": 0, "tokens": 0, "loss_tokens": 0, "bytes": 0}

    def close_shard():
        if state["writer"] is None:
            return
        state["writer"].close()
        state["sink"].close()
        path = state["path"]
        shards.append(
            _shard_entry(split, path, state["rows"], state["tokens"], state["loss_tokens"])
        )
        state.update(writer=None, rows=0, tokens=0, loss_tokens=0, bytes=0)

    def flush():
        if not pending:
            return
        if state["writer"] is None:
            path = folder / shard_name(len(shards))
            state["sink"] = pa.OSFile(str(path), "wb")
            state["writer"] = pa.ipc.new_stream(state["sink"], row_schema())
            state["path"] = path
        batch, lengths, losses = _record_batch(pending)
        state["writer"].write_batch(batch)
        tokens = int(lengths.sum(dtype=np.int64))
        state["rows"] += len(pending)
        state["tokens"] += tokens
        state["loss_tokens"] += int(losses.sum(dtype=np.int64))
        state["bytes"] += tokens * BYTES_PER_TOKEN
        pending.clear()
        if state["bytes"] >= shard_size_bytes:
            close_shard()

    for row in rows:
        pending.append(row)
        if len(pending) >= BATCH_ROWS:
            flush()
    flush()
    close_shard()
    if not shards:  # an empty split still has one (empty) shard, so readers need no special case
        path = folder / shard_name(0)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, row_schema()):
            pass
        shards.append(_shard_entry(split, path, 0, 0, 0))
    return shards


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
