"""Pack examples into rows of at most max_length tokens. Pure functions over lengths and arrays.

- `bfd`: best-fit decreasing over the whole split. Examples stay whole; each goes into the fullest
  row that still has room for it (ties: the earliest row); schemas/best_fit.py, shared with
  sfttrain's micro-batching.
- `wrapped`: concatenate and cut into rows of exactly max_length; a document cut at a row edge
  continues as its own segment in the next row, whose first token gets no loss.
- `none`: one example per row.

Worked example, max_length 8, lengths [5, 4, 3, 2] (ids 0..3): bfd puts 0 (5) in row A, 1 (4) in
row B, 2 (3) in A (fits exactly: A = [0, 2]), 3 (2) in B (B = [1, 3]). Efficiency 14 / 16.
"""

from dataclasses import dataclass

import numpy as np

from schemas.best_fit import best_fit_decreasing

Plan = list[list[tuple[int, int, int]]]
"""Rows, each a list of segments (spill position, first token, end token)."""


@dataclass(frozen=True)
class Segment:
    """A piece of an example placed in a row: example `index` (position in the split's list), tokens [start, stop)."""

    index: int
    start: int
    stop: int


def pack_bfd(lengths: np.ndarray, max_length: int) -> list[list[int]]:
    """Best-fit decreasing (schemas/best_fit.py, shared with sfttrain's batching). Returns rows as
    lists of example positions, each row in ascending position order."""
    return best_fit_decreasing(lengths, max_length)


def pack_wrapped(lengths: np.ndarray, max_length: int) -> list[list[Segment]]:
    """Concatenate examples in order and cut into rows of exactly max_length (the last may be shorter)."""
    rows: list[list[Segment]] = []
    row: list[Segment] = []
    room = max_length
    for index, length in enumerate(np.asarray(lengths).tolist()):
        start = 0
        while start < length:
            take = min(room, length - start)
            row.append(Segment(index, start, start + take))
            start += take
            room -= take
            if room == 0:
                rows.append(row)
                row, room = [], max_length
    if row:
        rows.append(row)
    return rows


def efficiency(total_tokens: int, rows: int, max_length: int) -> float:
    """tokens / (rows x max_length); 1.0 for an empty split."""
    return 1.0 if rows == 0 else total_tokens / (rows * max_length)


def length_histogram(lengths: np.ndarray, max_length: int, bins: int = 16) -> dict:
    """Example lengths in `bins` fixed, equal-width bins over [0, max_length]."""
    edges = np.linspace(0, max_length, bins + 1).round().astype(np.int64)
    counts, _ = np.histogram(np.asarray(lengths), bins=edges)
    return {"bin_edges": edges.tolist(), "counts": counts.tolist()}


def plan_rows(
    lengths: np.ndarray, positions: np.ndarray, packing: str, max_length: int, seed: int
) -> Plan:
    """Pack the examples at `positions` (their `lengths`) into rows, then shuffle the rows with the seed."""
    if packing == "wrapped":
        plan = [
            [(int(positions[s.index]), s.start, s.stop) for s in row]
            for row in pack_wrapped(lengths, max_length)
        ]
    else:
        groups = (
            pack_bfd(lengths, max_length)
            if packing == "bfd"
            else [[i] for i in range(len(positions))]
        )
        at, size = np.asarray(positions).tolist(), np.asarray(lengths).tolist()  # not per item
        plan = [[(at[i], 0, size[i]) for i in group] for group in groups]
    order = np.random.default_rng(seed).permutation(len(plan))
    return [plan[i] for i in order]
