"""Encoded examples of one split, spilled to disk while sources stream through.

Packing needs the whole split (best-fit decreasing is global), but only its lengths: the token
ids and masks go to two flat files (int32 ids, uint8 mask) as they arrive, and only a few bytes
per example stay in memory (offset, length, loss count, example id). Rows are then assembled by
reading each example back with `pread`, which does not grow the process's resident memory.
"""

import os
from array import array
from pathlib import Path

import numpy as np

from sftprep.encoding import Encoded

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

    def read(
        self, position: int, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and mask of the example at `position`, tokens [start, stop)."""
        if self._fds is None:
            self._ids.close()
            self._mask.close()
            self._fds = (
                os.open(self._ids_path, os.O_RDONLY),
                os.open(self._mask_path, os.O_RDONLY),
            )
        stop = self.lengths[position] if stop is None else stop
        first, count = self.starts[position] + start, stop - start
        ids = np.frombuffer(os.pread(self._fds[0], 4 * count, 4 * first), dtype=np.int32)
        mask = np.frombuffer(os.pread(self._fds[1], count, first), dtype=np.uint8).copy()
        return ids, mask

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
