"""Cost of sfttrain's per-row contract check (build_reader.row_problem) against what the same
rows cost the padding-free collator, in the same process. Prints microseconds per row and the
ratio; the check must stay a small fraction of a training step (a step also runs the model).

    python bench/row_checks.py [--rows 2000] [--length 2048]
"""

import argparse
import time

import numpy as np

from schemas import EXAMPLE_IDS, INPUT_IDS, LOSS_MASK, SEQ_LENS
from sfttrain.build_reader import row_problem
from sfttrain.collator import collate_padding_free


def make_rows(count: int, length: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        lens = np.array([length // 4, length // 4, length // 2], dtype=np.int32)
        mask = (rng.random(length) < 0.4).astype(np.uint8)
        mask[np.concatenate([[0], np.cumsum(lens)[:-1]])] = 0
        ids = rng.integers(0, 49152, size=length, dtype=np.int32)
        rows.append(
            {
                INPUT_IDS: ids,
                LOSS_MASK: mask,
                SEQ_LENS: lens,
                EXAMPLE_IDS: np.arange(3, dtype=np.int64),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8, help="rows per collated micro-batch")
    args = parser.parse_args()
    rows = make_rows(args.rows, args.length)
    best_check = best_collate = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        assert not any(row_problem(r, args.length, 49152) for r in rows)
        best_check = min(best_check, time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(0, len(rows), args.batch):
            collate_padding_free(rows[i : i + args.batch])
        best_collate = min(best_collate, time.perf_counter() - start)
    per_row = best_check / len(rows) * 1e6
    print(f"rows {len(rows)} x {args.length} tokens, best of 3")
    print(f"row check: {per_row:.1f} us/row; collator: {best_collate / len(rows) * 1e6:.1f} us/row")
    print(f"ratio check/collate: {best_check / best_collate:.3f}")


if __name__ == "__main__":
    main()
