"""The one best-fit packer against a naive reference (scan every bin), and its invariants."""

import numpy as np
import pytest

from schemas.best_fit import best_fit, best_fit_decreasing


def naive_best_fit(order, sizes, capacity):
    bins, rooms = [], []
    for item in order:
        fits = [b for b, room in enumerate(rooms) if room >= sizes[item]]
        b = min(fits, key=lambda b: (rooms[b], b)) if fits else None
        if b is None:
            bins.append([])
            rooms.append(capacity)
            b = len(bins) - 1
        bins[b].append(item)
        rooms[b] -= sizes[item]
    return bins


def test_equals_the_naive_reference_on_random_inputs():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(400):
        capacity = int(rng.integers(1, 40))
        sizes = rng.integers(1, capacity + 1, size=int(rng.integers(0, 120)))
        order = rng.permutation(len(sizes))
        assert best_fit(order, sizes, capacity) == naive_best_fit(
            order.tolist(), sizes.tolist(), capacity
        )
        checked += len(sizes)
    assert checked > 10_000


def test_decreasing_keeps_every_item_once_within_capacity_and_ties_go_to_the_earliest_bin():
    assert best_fit_decreasing(np.array([5, 4, 3, 2]), 8) == [[0, 2], [1, 3]]
    assert best_fit_decreasing(np.array([4, 4, 4, 4]), 8) == [[0, 1], [2, 3]]
    sizes = np.random.default_rng(1).integers(1, 300, size=5000)
    bins = best_fit_decreasing(sizes, 512)
    assert sorted(i for b in bins for i in b) == list(range(5000))
    assert all(sizes[b].sum() <= 512 for b in bins)
    with pytest.raises(ValueError):
        best_fit_decreasing(np.array([9]), 8)
