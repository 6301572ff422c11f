"""From spilled examples to the rows of each split: hold out eval, plan rows, read them back.

Planning uses lengths only (a few bytes per example); the token ids are read back from the spill
one row at a time while the writer streams them out.
"""

import hashlib

import numpy as np

from schemas.manifest import ShardEntry, SplitEntry
from sftprep.config import BuildConfig
from sftprep.stages.pack import Plan, efficiency, length_histogram
from sftprep.stages.spill import Spill


def split_positions(
    spills: dict[str, Spill], sources: list, config: BuildConfig
) -> dict[str, tuple[Spill, np.ndarray]]:
    """Which spilled examples make each split (eval by --eval sources or a seeded, stable hash)."""
    train = spills["train"]
    everything = np.arange(len(train), dtype=np.int64)
    if config.eval_fraction:
        held = _held_out(np.asarray(train.example_ids, dtype=np.int64), sources, config)
        return {"train": (train, everything[~held]), "eval": (train, everything[held])}
    out = {"train": (train, everything)}
    if config.eval_sources:
        out["eval"] = (spills["eval"], np.arange(len(spills["eval"]), dtype=np.int64))
    return out


def _held_out(example_ids: np.ndarray, sources: list, config: BuildConfig) -> np.ndarray:
    """The rows whose hash(seed, source content, row) is smallest: stable when data is appended.
    The copies of a repeated row share that hash and are held out together (never split
    between train and eval)."""
    starts = np.array([s.example_id_start for s in sources], dtype=np.int64)

    def key(example_id: int) -> bytes:
        source = sources[int(np.searchsorted(starts, example_id, side="right")) - 1]
        row = (example_id - source.example_id_start) // source.repeat
        text = f"{config.seed}:{source.sha256}:{row}"
        return hashlib.blake2b(text.encode(), digest_size=8).digest()

    keys = {int(i): key(int(i)) for i in np.unique(example_ids)}
    rows = sorted(set(keys.values()))
    count = (
        min(len(rows) - 1, max(1, round(config.eval_fraction * len(rows)))) if len(rows) > 1 else 0
    )
    chosen = set(rows[:count])
    held = np.array([i for i, k in keys.items() if k in chosen], dtype=np.int64)
    return np.isin(example_ids, held)


def split_stats(
    spill: Spill, positions: np.ndarray, plan: Plan, shards: list[ShardEntry], config: BuildConfig
) -> SplitEntry:
    """The manifest's numbers for one split."""
    everything = np.asarray(spill.lengths, dtype=np.int64)
    lengths = everything[positions] if len(positions) else np.zeros(0, dtype=np.int64)
    ids = np.asarray(spill.example_ids, dtype=np.int64)
    tokens = int(lengths.sum())
    return SplitEntry(
        rows=len(plan),
        examples=int(len(np.unique(ids[positions]))) if len(positions) else 0,
        tokens=tokens,
        loss_tokens=sum(
            s.loss_tokens for s in shards
        ),  # from the rows: wrapping unmarks segment starts
        max_length=config.max_length,
        packing=config.packing,
        packing_efficiency=round(efficiency(tokens, len(plan), config.max_length), 6),
        length_histogram=length_histogram(lengths, config.max_length),
        shards=tuple(shards),
    )
