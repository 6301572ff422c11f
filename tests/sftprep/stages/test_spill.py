"""The spill: examples written as they arrive, lengths kept in memory, rows read back by plan."""

import numpy as np

from sftprep.stages.masks import Encoded
from sftprep.stages.pack import plan_rows
from sftprep.stages.spill import Spill, assemble_rows


def test_examples_come_back_as_planned_with_each_segment_start_untrained(tmp_path):
    spill = Spill(tmp_path, "train")
    examples = {7: [1, 2, 3], 9: [4, 5], 11: [6, 7, 8, 9]}
    for example_id, ids in examples.items():
        spill.add(
            example_id, Encoded(np.array(ids, dtype=np.int32), np.ones(len(ids), dtype=np.uint8))
        )
    positions = np.arange(len(spill))
    lengths = spill.lengths_at(positions)
    assert (
        lengths.tolist() == [3, 2, 4]
        and spill.lengths_at(np.array([], dtype=np.int64)).tolist() == []
    )
    plan = plan_rows(lengths, positions, "bfd", 5, seed=0)
    rows = list(assemble_rows(spill, plan))
    spill.close()
    seen = {}
    for ids, mask, seq_lens, example_ids in rows:
        assert sum(seq_lens) == len(ids) == len(mask) <= 5
        start = 0
        for length, example_id in zip(seq_lens, example_ids):
            seen[example_id] = ids[start : start + length].tolist()
            assert mask[start] == 0 and mask[start + 1 : start + length].all()
            start += length
    assert seen == examples  # every example exactly once, whole


def test_rows_of_partial_segments_read_back_exactly(tmp_path):
    """Wrapped packing cuts examples: every segment [start, stop) comes back from its own bytes,
    in row and segment order, across read groups (more rows than READ_ROWS)."""
    from sftprep.stages import spill as spill_module

    rng = np.random.default_rng(1)
    spill = Spill(tmp_path, "train")
    stored = []
    for example_id in range(300):
        ids = rng.integers(0, 1 << 30, int(rng.integers(1, 40))).astype(np.int32)
        mask = (rng.random(len(ids)) < 0.5).astype(np.uint8)
        spill.add(example_id, Encoded(ids, mask))
        stored.append((ids, mask))
    positions = np.arange(len(spill))
    plan = plan_rows(spill.lengths_at(positions), positions, "wrapped", 16, seed=3)
    assert len(plan) > spill_module.READ_ROWS // 2
    spill_module.READ_ROWS, old = 7, spill_module.READ_ROWS
    try:
        rows = list(assemble_rows(spill, plan))
    finally:
        spill_module.READ_ROWS = old
    assert len(rows) == len(plan) and any(start > 0 for row in plan for _, start, _ in row)
    for (ids, mask, seq_lens, example_ids), row in zip(rows, plan):
        at = 0
        for (position, start, stop), length, example_id in zip(row, seq_lens, example_ids):
            assert length == stop - start and example_id == position
            assert ids[at : at + length].tolist() == stored[position][0][start:stop].tolist()
            assert mask[at] == 0
            assert (
                mask[at + 1 : at + length].tolist()
                == stored[position][1][start + 1 : stop].tolist()
            )
            at += length
        assert at == len(ids) == len(mask)
    whole = spill.read(5)
    assert whole[0].tolist() == stored[5][0].tolist() and whole[1].tolist() == stored[5][1].tolist()
    spill.close()
