"""Choosing examples once a whole source is encoded: `take: N` with `sample: true`, and the
global `mix: tokens`, where each source's `weight` sets its share of the split's trained tokens.

Both decide a number of copies per kept row (0 or 1 for a sample; for a weight, every row
`floor(f)` times and a seeded set of rows once more, f = the source's target / its loss tokens),
then rewrite the spill's index (never its data: a copy points at the same tokens) so that a
copy has its own example id, start + row * R + copy, R the most copies any row of it got.

Worked example, mix tokens, A with 600 loss tokens and weight 1, B with 200 and weight 3: the
split keeps 800 trained tokens, so A's target is 200 (a seeded third of its rows) and B's is
600 (each row three times).
"""

import hashlib

import numpy as np

from sftprep.errors import SftprepError
from sftprep.source_settings import mixture
from sftprep.stages.source_stats import SourceStats
from sftprep.stages.spill import Spill


def choose_examples(spills: dict[str, Spill], stats: list[SourceStats], seed: int) -> None:
    """Apply every source's sample or weight to the spills and recount the sources; rewrite the
    example ids of all sources so that each source's ids stay one contiguous range."""
    if not any(st.kept_rows is not None for st in stats):
        return
    copies = {}
    weighted = [st for st in stats if mixture(st.source.settings).weight is not None]
    for st, counts in zip(weighted, _weight_copies(weighted, spills, seed)):
        copies[id(st)] = counts
    for st in stats:
        mix = mixture(st.source.settings)
        if mix.sample:
            copies[id(st)] = _sample_copies(st, mix.take, seed)
    _reindex(spills, stats, copies)


def _spill_of(spills: dict[str, Spill], st: SourceStats) -> Spill:
    return spills["eval" if st.split == "eval" else "train"]


def _row_keys(st: SourceStats, seed: int) -> np.ndarray:
    """A seeded hash per kept row, stable whatever else the build holds."""
    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(f"mix:{seed}:{st.sha256}:{row}".encode(), digest_size=8).digest(),
                "big",
            )
            for row in st.kept_rows.rows
        ],
        dtype=np.uint64,
    )


def _per_row(st: SourceStats, spill: Spill, values) -> np.ndarray:
    """A per-piece spill column (lengths, loss counts) summed over each kept row's pieces."""
    kept = st.kept_rows
    column = np.asarray(values, dtype=np.int64)[st.spill_range[0] : st.spill_range[1]]
    total = np.concatenate([[0], np.cumsum(column)])
    firsts = np.asarray(kept.firsts, dtype=np.int64) - st.spill_range[0]
    return total[firsts + np.asarray(kept.pieces, dtype=np.int64)] - total[firsts]


def _sample_copies(st: SourceStats, take: int, seed: int) -> np.ndarray:
    """One copy of each of the `take` kept rows of smallest hash, none of the others."""
    usable = len(st.kept_rows.rows)
    if take > usable:
        dropped = ", ".join(f"{n:,} {r}" for r, n in sorted(st.dropped.items()))
        raise SftprepError(
            f"{st.source.path}: take {take:,} (sample) asks for more rows than the source has: "
            f"{usable:,} of its {st.rows_read:,} rows are usable"
            + (f" ({dropped} dropped)" if dropped else "")
            + "; lower take, or use repeat to upsample"
        )
    counts = np.zeros(usable, dtype=np.int64)
    counts[np.argsort(_row_keys(st, seed), kind="stable")[:take]] = 1
    return counts


def _weight_copies(weighted: list[SourceStats], spills: dict, seed: int) -> list[np.ndarray]:
    """Copies per row so that each source's loss tokens come closest to weight / sum of
    weights of the split's trained tokens (their sum as read), by whole rows."""
    if not weighted:
        return []
    losses = [
        _per_row(st, _spill_of(spills, st), _spill_of(spills, st).loss_counts) for st in weighted
    ]
    weights = np.array([mixture(st.source.settings).weight for st in weighted], dtype=np.float64)
    split_total = float(sum(int(loss.sum()) for loss in losses))
    result = []
    for st, loss, share in zip(weighted, losses, weights / weights.sum()):
        have = int(loss.sum())
        if not have:
            raise SftprepError(
                f"{st.source.path}: weight {mixture(st.source.settings).weight} asks for a share "
                f"of the trained tokens, but none of its {st.rows_read:,} rows has any left "
                "(see its drops); fix the source or remove it"
            )
        target = share * split_total
        full = int(target // have)
        rest = target - full * have
        order = np.argsort(_row_keys(st, seed), kind="stable")
        reached = np.concatenate([[0], np.cumsum(loss[order])])
        at = int(np.searchsorted(reached, rest))
        if at >= len(reached) or (at > 0 and rest - reached[at - 1] <= reached[at] - rest):
            at -= 1  # the prefix of rows whose loss tokens come closest to the rest
        counts = np.full(len(loss), full, dtype=np.int64)
        counts[order[:at]] += 1
        result.append(counts)
    return result


def _reindex(spills: dict[str, Spill], stats: list[SourceStats], copies: dict) -> None:
    """New spill index of each split: a chosen source's rows `copies` times each, the other
    sources as they were; ids start + row * R + copy, every source's start moved to follow the
    source before it."""
    order = {name: ([], []) for name in spills}
    start = 0
    for st in stats:
        positions, ids = order["eval" if st.split == "eval" else "train"]
        spill = _spill_of(spills, st)
        low, high = st.spill_range
        if id(st) not in copies:
            positions.append(np.arange(low, high, dtype=np.int64))
            ids.append(
                np.asarray(spill.example_ids, dtype=np.int64)[low:high]
                - st.example_id_start
                + start
            )
        else:
            counts = copies[id(st)]
            st.repeat = max(1, int(counts.max(initial=0)))
            where, ids_here = _copies_index(st, counts, start)
            positions.append(where)
            ids.append(ids_here)
            _recount(st, spill, counts)
        st.example_id_start = start
        start += st.rows_read * st.repeat
    for name, spill in spills.items():
        positions, ids = order[name]
        if positions:
            spill.reindex(np.concatenate(positions), np.concatenate(ids))


def _copies_index(st: SourceStats, counts: np.ndarray, start: int) -> tuple:
    """Spill positions and example ids of every copy of every piece of the kept rows, in
    row, copy, piece order (the order `repeat` writes them in)."""
    kept = st.kept_rows
    rows = np.asarray(kept.rows, dtype=np.int64)
    firsts = np.asarray(kept.firsts, dtype=np.int64)
    pieces = np.asarray(kept.pieces, dtype=np.int64)
    row_of_copy = np.repeat(np.arange(len(counts)), counts)
    copy = np.arange(len(row_of_copy)) - np.repeat(np.cumsum(counts) - counts, counts)
    copy_of_piece = np.repeat(np.arange(len(row_of_copy)), pieces[row_of_copy])
    piece = np.arange(len(copy_of_piece)) - np.repeat(
        np.cumsum(pieces[row_of_copy]) - pieces[row_of_copy], pieces[row_of_copy]
    )
    row = row_of_copy[copy_of_piece]
    positions = firsts[row] + piece
    return positions, start + rows[row] * st.repeat + copy[copy_of_piece]


def _recount(st: SourceStats, spill: Spill, counts: np.ndarray) -> None:
    """The source's counts as chosen: rows kept, examples, tokens and loss tokens with copies."""
    kept = st.kept_rows
    cuts = np.asarray(kept.cuts, dtype=np.int64)
    chosen = counts > 0
    st.rows_kept = int(chosen.sum())
    st.examples = int(counts.sum())
    st.tokens = int((counts * _per_row(st, spill, spill.lengths)).sum())
    st.loss_tokens = int((counts * _per_row(st, spill, spill.loss_counts)).sum())
    st.truncated = int((chosen & (cuts > 0)).sum())
    st.truncated_tokens = int(cuts[chosen].sum())
    st.split_examples = int((chosen & (np.asarray(kept.pieces) > 1)).sum())
