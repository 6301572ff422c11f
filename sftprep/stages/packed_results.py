"""A chunk's encoded rows as a few flat arrays: what a worker sends back, and what a spill takes whole.

A chunk of results is a list of (row index, Encoded | RowError). Sent from a worker as it is,
every row pickles two small arrays and a dataclass, and the build process unpickles them, puts
each through the length policy and appends it to the spill, one Python call after another:
at 200k Alpaca rows that was ~3 s of the build process's CPU, on the cores the workers need.
Packed, a chunk is five arrays (ids and masks end to end, lengths, loss counts, row indices)
and its bad rows; the build process then spills each run of rows kept as they are in one go
(pipeline._spill_packed), and only the others one by one.
"""

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from sftprep.errors import RowError
from sftprep.stages.masks import Encoded


@dataclass
class PackedResults:
    """The results of one chunk (see the module docstring), encoded rows in row order."""

    rows: np.ndarray
    """int64 row index of each encoded row."""
    ids: np.ndarray
    """int32, every encoded row's ids end to end."""
    mask: np.ndarray
    """uint8, their loss masks end to end."""
    lengths: np.ndarray
    """int64 tokens of each encoded row."""
    loss_tokens: np.ndarray
    """int64 loss tokens of each encoded row."""
    encoded_by: list
    """The encoder of each encoded row (masks.Encoded.encoded_by)."""
    located_by: list
    """How each encoded row's turns were located (masks.Encoded.located_by)."""
    errors: list = field(default_factory=list)
    """(row index, RowError) of the chunk's bad rows."""

    def __len__(self) -> int:
        return len(self.rows) + len(self.errors)

    def shifted(self, by: int) -> "PackedResults":
        """The same results with every row index moved by `by` (a chunk's first row in its file)."""
        return PackedResults(
            self.rows + by, self.ids, self.mask, self.lengths, self.loss_tokens,
            self.encoded_by, self.located_by, [(i + by, err) for i, err in self.errors],
        )  # fmt: skip

    @cached_property
    def starts(self) -> np.ndarray:
        """Where each encoded row begins in `ids`, and where the last ends."""
        return np.concatenate([[0], np.cumsum(self.lengths)])

    def encoded(self, k: int) -> Encoded:
        """Encoded row k (a view of the arrays)."""
        a, b = int(self.starts[k]), int(self.starts[k + 1])
        return Encoded(
            self.ids[a:b], self.mask[a:b], int(self.loss_tokens[k]), self.encoded_by[k],
            self.located_by[k],
        )  # fmt: skip

    def part(self, first: int, stop: int) -> "PackedResults":
        """Encoded rows [first, stop) alone (no bad rows)."""
        a, b = int(self.starts[first]), int(self.starts[stop])
        return PackedResults(
            self.rows[first:stop], self.ids[a:b], self.mask[a:b], self.lengths[first:stop],
            self.loss_tokens[first:stop], self.encoded_by[first:stop], self.located_by[first:stop],
        )  # fmt: skip

    def unpacked(self) -> list:
        """The list of (row index, Encoded | RowError) it was packed from, in row order."""
        starts = self.starts.tolist()
        rows = [
            (row, Encoded(self.ids[a:b], self.mask[a:b], loss, by, way))
            for row, a, b, loss, by, way in zip(
                self.rows.tolist(),
                starts,
                starts[1:],
                self.loss_tokens.tolist(),
                self.encoded_by,
                self.located_by,
            )
        ]
        return sorted(rows + self.errors, key=lambda pair: pair[0])


def pack_results(results: list) -> PackedResults:
    """A chunk's list of (row index, Encoded | RowError), packed."""
    encoded = [(i, e) for i, e in results if not isinstance(e, RowError)]
    errors = [(i, e) for i, e in results if isinstance(e, RowError)]
    return PackedResults(
        np.fromiter((i for i, _ in encoded), dtype=np.int64, count=len(encoded)),
        np.concatenate([e.input_ids for _, e in encoded]) if encoded else np.zeros(0, np.int32),
        np.concatenate([e.loss_mask for _, e in encoded]) if encoded else np.zeros(0, np.uint8),
        np.fromiter((len(e.input_ids) for _, e in encoded), dtype=np.int64, count=len(encoded)),
        np.fromiter((e.loss_tokens for _, e in encoded), dtype=np.int64, count=len(encoded)),
        [e.encoded_by for _, e in encoded],
        [e.located_by for _, e in encoded],
        errors,
    )


def joined(parts: list[PackedResults]) -> PackedResults:
    """The packed results of consecutive chunks (each one's rows after the previous one's), as one."""
    if len(parts) <= 1:
        return parts[0] if parts else pack_results([])
    return PackedResults(
        *(np.concatenate([getattr(p, name) for p in parts])
          for name in ("rows", "ids", "mask", "lengths", "loss_tokens")),
        [by for p in parts for by in p.encoded_by],
        [way for p in parts for way in p.located_by],
        [pair for p in parts for pair in p.errors],
    )  # fmt: skip


def kept_whole(packed: PackedResults, max_length: int, wrapped: bool) -> np.ndarray:
    """Per encoded row, whether the length policy keeps it as it is: it trains a token and fits
    max_length (wrapped packing cuts rows itself), so `admit` would return it unchanged."""
    fits = np.ones(len(packed.lengths), dtype=bool) if wrapped else packed.lengths <= max_length
    return fits & (packed.loss_tokens > 0)
