"""Token-budget micro-batches: which rows go together, in which order, on which rank.

Rows are grouped so that no micro-batch holds more than `budget` tokens, with best-fit
decreasing (BFD) on the row lengths, ties broken by a shuffle seeded with (seed, epoch); the
micro-batches are then shuffled with the same generator. BFD's choices depend only on the sorted
lengths, so every epoch has the same number of micro-batches (Trainer needs a fixed length),
while rows of equal length (most rows of a packed build) trade places between epochs.

Worked example, budget 8, lengths [5, 3, 4, 4, 2]: sorted 5, 4, 4, 3, 2 -> bins {5, 3}, {4, 4},
{2}: three micro-batches of 8, 8 and 2 tokens, in a seeded order.

Under data parallelism the list is dealt round robin, rank r taking micro-batches r, r + world,
...; when the count does not divide, the first micro-batches of the epoch are repeated so that
every rank runs the same number of steps (as torch's DistributedSampler pads).
"""

from __future__ import annotations

import numpy as np

from schemas.best_fit import best_fit
from sfttrain.errors import SfttrainError


def plan_batches(lengths: np.ndarray, budget: int, seed: int, epoch: int) -> list[list[int]]:
    """Row indices of each micro-batch of one epoch, in training order."""
    lengths = np.asarray(lengths, dtype=np.int64)
    check_fits(lengths, budget)
    rng = np.random.default_rng([seed, epoch])
    shuffled = rng.permutation(len(lengths))
    order = shuffled[np.argsort(-lengths[shuffled], kind="stable")]
    batches = best_fit(order, lengths, budget)
    return [batches[i] for i in rng.permutation(len(batches))]


def check_fits(lengths: np.ndarray, budget: int) -> None:
    """Refuse rows longer than the budget: they could never be trained."""
    too_long = np.flatnonzero(np.asarray(lengths) > budget)
    if too_long.size:
        raise SfttrainError(
            f"{too_long.size} row(s) have more tokens than --batch-tokens {budget} (longest: {int(np.max(lengths))} "
            f"tokens, row {int(too_long[0])}): raise --batch-tokens to at least the build's max_length"
        )


def shard_for_rank(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's micro-batches: every world_size-th, padded so each rank gets the same count."""
    if not batches:
        return []
    per_rank = -(-len(batches) // world_size)
    padded = batches + [
        batches[i % len(batches)] for i in range(per_rank * world_size - len(batches))
    ]
    return padded[rank::world_size]


def counted_for_rank(count: int, rank: int, world_size: int) -> list[bool]:
    """Which of this rank's micro-batches (shard_for_rank of `count`) are not padding: a repeated
    micro-batch keeps the ranks in step but must not count twice in an evaluation."""
    per_rank = -(-count // world_size) if count else 0
    return [rank + k * world_size < count for k in range(per_rank)]


class TokenBudgetBatchSampler:
    """A batch sampler for torch's DataLoader: yields this rank's micro-batches of one epoch.

    The order is a function of (seed, epoch) only, so a resumed run that skips the batches it
    already trained sees exactly the batches it would have seen. `shuffle=False` (evaluation)
    keeps the rows in build order, packed greedily.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        budget: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        self.lengths = np.asarray(lengths)
        self.budget = budget
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self._cache: tuple[int, list[list[int]], int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        """This rank's micro-batches for the current epoch (cached per epoch)."""
        if self._cache is None or self._cache[0] != self.epoch:
            planned = (
                plan_batches(self.lengths, self.budget, self.seed, self.epoch)
                if self.shuffle
                else _in_order(self.lengths, self.budget)
            )
            self._cache = (
                self.epoch,
                shard_for_rank(planned, self.rank, self.world_size),
                len(planned),
            )
        return self._cache[1]

    def counted(self) -> list[bool]:
        """For each of this rank's micro-batches: False for a repeat that only pads the ranks."""
        self.batches()
        return counted_for_rank(self._cache[2], self.rank, self.world_size)

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def _in_order(lengths: np.ndarray, budget: int) -> list[list[int]]:
    """Consecutive rows, a new micro-batch whenever the next row would overflow the budget."""
    check_fits(lengths, budget)
    batches: list[list[int]] = []
    used = budget
    for row, n in enumerate(lengths.tolist()):
        if used + n > budget:
            batches.append([])
            used = 0
        batches[-1].append(row)
        used += n
    return batches
