"""Encoded examples of one split, spilled to disk while sources stream through.

Packing needs the whole split (best-fit decreasing is global), but only its lengths: the token
ids and masks go to two flat files (int32 ids, uint8 mask) as they arrive, and only a few bytes
per example stay in memory (offset, length, loss count, example id). Rows are then assembled by
reading each example back with `pread`, which does not grow the process's resident memory.
"""

import os
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sftprep.stages.masks import Encoded

WRITE_BUFFER = 1 << 20


class Spill:
    """An append-only store of encoded examples with random access by position."""

    def __init__(self, folder: Path, name: str):
        folder.mkdir(parents=True, exist_ok=True)
        self._ids_path, self._mask_path = folder / f"{name}.ids", folder / f"{name}.mask"
        self._ids = open(self._ids_path, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115 - closed by close()
        self._mask = open(self._mask_path, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115
        self.example_ids = array("q")
        self.starts = array("q")
        self.lengths = array("l")
        self.loss_counts = array("l")
        self._end = 0
        self._fds: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def lengths_at(self, positions: np.ndarray) -> np.ndarray:
        """Token counts (int64) of the examples at these positions."""
        if not len(positions):
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self.lengths, dtype=np.int64)[positions]

    def add(self, example_id: int, encoded: Encoded) -> None:
        """Append one example (or one fragment of a split example)."""
        n = len(encoded.input_ids)
        self._ids.write(np.ascontiguousarray(encoded.input_ids, dtype=np.int32).data)
        self._mask.write(np.ascontiguousarray(encoded.loss_mask, dtype=np.uint8).data)
        self.example_ids.append(example_id)
        self.starts.append(self._end)
        self.lengths.append(n)
        self.loss_counts.append(encoded.loss_tokens)
        self._end += n

    def add_packed(self, example_ids: np.ndarray, packed) -> None:
        """Append every encoded row of a PackedResults whole, as `add` would one by one, with
        these example ids."""
        self._ids.write(np.ascontiguousarray(packed.ids, dtype=np.int32).data)
        self._mask.write(np.ascontiguousarray(packed.mask, dtype=np.uint8).data)
        ends = np.cumsum(packed.lengths, dtype=np.int64)
        self.example_ids.frombytes(np.asarray(example_ids, dtype=np.int64).tobytes())
        self.starts.frombytes((self._end + ends - packed.lengths).astype(np.int64).tobytes())
        self.lengths.extend(packed.lengths.tolist())
        self.loss_counts.extend(packed.loss_tokens.tolist())
        self._end += int(ends[-1]) if len(ends) else 0

    def reindex(self, positions: np.ndarray, example_ids: np.ndarray) -> None:
        """Replace the index by the examples at `positions` (repeats allowed: a copy shares the
        data), with these example ids; the data files are not touched."""
        self.example_ids = array("q", np.asarray(example_ids, dtype=np.int64).tobytes())
        for name in ("starts", "lengths", "loss_counts"):
            column = getattr(self, name)
            picked = np.asarray(column)[positions]
            setattr(self, name, array(column.typecode, picked.tobytes()))

    def read(
        self, position: int, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and mask of the example at `position`, tokens [start, stop)."""
        stop = self.lengths[position] if stop is None else stop
        [(ids, mask, _, _)] = self.read_rows([[(position, start, stop)]], keep_first=True)
        return ids, mask

    def read_rows(self, rows: list, keep_first: bool = False) -> list[tuple]:
        """(input_ids, loss_mask, seq_lens, example_ids) of each planned row, a row being a list
        of (position, start, stop) segments; each segment's first token untrained (nothing
        before it in the row predicts it) unless `keep_first`. All the rows' tokens are read into
        one ids and one mask array, a `pread` per segment and file straight into place; the
        offsets, the masks' segment starts and the rows' slices are numpy over all the rows.
        (`pread`, not a map of the files: a map's fault-around made resident memory grow by
        ~64 KiB per segment read.)"""
        segments = np.array([seg for row in rows for seg in row], dtype=np.int64).reshape(-1, 3)
        position, start, stop = segments.T
        sizes = stop - start
        first = np.frombuffer(self.starts, dtype=np.int64)[position] + start
        placed = np.cumsum(sizes) - sizes  # where each segment goes in the arrays
        ids, mask = np.empty(int(sizes.sum()), np.int32), np.empty(int(sizes.sum()), np.uint8)
        ids_fd, mask_fd = self._read_fds()
        ids_bytes, mask_bytes = memoryview(ids).cast("B"), memoryview(mask)
        for at, size, offset in zip(placed.tolist(), sizes.tolist(), first.tolist()):
            _read_exactly(ids_fd, ids_bytes[at * 4 : (at + size) * 4], offset * 4)
            _read_exactly(mask_fd, mask_bytes[at : at + size], offset)
        if not keep_first:
            mask[placed[sizes > 0]] = 0
        example_ids = np.frombuffer(self.example_ids, dtype=np.int64)[position].tolist()
        sizes_list = sizes.tolist()
        out, seg, token = [], 0, 0
        for row in rows:
            n = len(row)
            total = sum(sizes_list[seg : seg + n])
            out.append(
                (ids[token : token + total], mask[token : token + total],
                 sizes_list[seg : seg + n], example_ids[seg : seg + n])
            )  # fmt: skip
            seg, token = seg + n, token + total
        return out

    def _read_fds(self) -> tuple[int, int]:
        """Read-only descriptors of the ids and mask files, opened once the writing is over."""
        if self._fds is None:
            self._ids.close()
            self._mask.close()
            self._fds = (
                os.open(self._ids_path, os.O_RDONLY),
                os.open(self._mask_path, os.O_RDONLY),
            )
        return self._fds

    def close(self) -> None:
        """Close and delete the spill files."""
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
        else:
            self._ids.close()
            self._mask.close()
        for path in (self._ids_path, self._mask_path):
            path.unlink(missing_ok=True)


def _read_exactly(fd: int, into: memoryview, offset: int) -> None:
    if os.preadv(fd, [into], offset) != len(into):  # a regular file reads whole
        raise OSError(f"the spill file ended early ({len(into)} bytes asked at {offset})")


READ_ROWS = 512
"""Planned rows read back from the spill at a time (assemble_rows)."""


def assemble_rows(spill: Spill, plan: list) -> Iterator[tuple]:
    """Rows (input_ids, loss_mask, seq_lens, example_ids) read back from the spill, in plan order,
    READ_ROWS at a time (Spill.read_rows)."""
    for first in range(0, len(plan), READ_ROWS):
        yield from spill.read_rows(plan[first : first + READ_ROWS])
