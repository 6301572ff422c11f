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
        ids, mask = np.empty(stop - start, np.int32), np.empty(stop - start, np.uint8)
        self.read_into(position, start, stop, ids, mask)
        return ids, mask

    def read_into(
        self, position: int, start: int, stop: int, ids: np.ndarray, mask: np.ndarray
    ) -> None:
        """Read tokens [start, stop) of the example at `position` into `ids` (int32) and `mask`
        (uint8), views of the row being assembled: one `preadv` each, no copy in between."""
        if self._fds is None:
            self._ids.close()
            self._mask.close()
            self._fds = (
                os.open(self._ids_path, os.O_RDONLY),
                os.open(self._mask_path, os.O_RDONLY),
            )
        first = self.starts[position] + start
        for fd, out, width in ((self._fds[0], ids, 4), (self._fds[1], mask, 1)):
            want = (stop - start) * width
            if os.preadv(fd, [out], first * width) != want:  # a regular file reads whole
                raise OSError(f"the spill file ended early ({want} bytes asked at {first * width})")

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


def assemble_rows(spill: Spill, plan: list) -> Iterator[tuple]:
    """Rows (input_ids, loss_mask, seq_lens, example_ids) read back from the spill, in plan order."""
    for row in plan:
        total = sum(stop - start for _, start, stop in row)
        ids, mask = np.empty(total, np.int32), np.empty(total, np.uint8)
        at = 0
        for position, start, stop in row:
            end = at + stop - start
            spill.read_into(position, start, stop, ids[at:end], mask[at:end])
            mask[at] = 0  # a segment's first token has nothing before it in the row
            at = end
        yield (
            ids,
            mask,
            [stop - start for _, start, stop in row],
            [spill.example_ids[p] for p, _, _ in row],
        )
