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
