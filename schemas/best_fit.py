"""Best-fit decreasing bin packing, the one implementation both stages use: sftprep packs
examples into rows of max_length tokens, sfttrain packs rows into micro-batches of a token budget.

Chosen by measurement (bench note in the closing note of the structure issue): sorted free-room
counts with `bisect` plus a heap of bins per free-room count is 3.5x faster than a segment tree
over capacities, with the same bins. Ties go to the earliest bin, so the result is deterministic.

Worked example, capacity 8, sizes [5, 4, 3, 2] in that order: bin 0 gets 5 (room 3), bin 1 gets
4 (room 4), 3 fits bin 0 exactly, 2 goes to bin 1: [[0, 2], [1, 3]].
"""

import bisect
import heapq

import numpy as np


def best_fit(order, sizes: np.ndarray, capacity: int) -> list[list[int]]:
    """Put each item, in `order`, into the open bin with the least room that still fits it (the
    earliest such bin on a tie); items are listed in each bin in the order they were placed."""
    bins: list[list[int]] = []
    rooms: list[int] = []  # sorted distinct free-room counts of open bins
    by_room: dict[int, list[int]] = {}  # free room -> heap of the bins with that much room
    size_of = np.asarray(sizes).tolist()  # Python ints: indexing numpy per item costs more
    for item in np.asarray(order).tolist():
        need = size_of[item]
        at = bisect.bisect_left(rooms, need)
        if at < len(rooms):
            room = rooms[at]
            holders = by_room[room]
            b = heapq.heappop(holders)
            if not holders:
                del by_room[room]
                rooms.pop(at)
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(item)
        left = room - need
        if left > 0:
            holders = by_room.get(left)
            if holders is None:
                bisect.insort(rooms, left)
                by_room[left] = [b]
            else:
                heapq.heappush(holders, b)
    return bins


def best_fit_decreasing(sizes: np.ndarray, capacity: int) -> list[list[int]]:
    """best_fit over the items longest first (ties in input order); each bin in ascending order."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) and int(sizes.max()) > capacity:
        raise ValueError("every size must be <= capacity before packing")
    order = np.argsort(-sizes, kind="stable")
    return [sorted(b) for b in best_fit(order, sizes, capacity)]
