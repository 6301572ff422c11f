"""`sftprep verify`: check a finished build against its manifest and the contract.

Cheap checks (manifest schema, shard presence and sizes) take milliseconds; deep checks also hash
every shard and test the packing invariants on every row, vectorized over Arrow buffers.
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas import (
    EXAMPLE_IDS,
    INPUT_IDS,
    LOSS_MASK,
    NUM_LOSS_TOKENS,
    NUM_TOKENS,
    SEQ_LENS,
    row_schema,
)
from schemas.manifest import (
    Manifest,
    ManifestError,
    SplitEntry,
    open_shard,
    read_manifest,
    shard_problems,
)
from sftprep.config import recorded_config


def verify_build(build: str | Path, deep: bool = True) -> list[str]:  # noqa: C901, PLR0912 - one check per line of the contract
    """Every problem found in the build at `build` (empty list = the build is sound)."""
    build = Path(build)
    try:
        manifest = read_manifest(build)
    except ManifestError as err:
        return [str(err)]
    problems = shard_problems(build, manifest, sha256=deep)
    if problems or not deep:
        return problems
    seen: Counter = Counter()
    for split, info in manifest.splits.items():
        problems += _check_split(build, split, info, manifest, seen)
    whole = manifest.train.packing != "wrapped" and recorded_config(manifest).overlong != "split"
    if whole:
        twice = [i for i, n in seen.items() if n > 1]
        if twice:
            problems.append(f"examples {twice[:5]} appear in more than one row")
        kept = sum(s.examples or s.rows_kept * s.repeat for s in manifest.sources)  # with copies
        if len(seen) != kept:
            problems.append(
                f"{len(seen)} distinct examples in the shards, the manifest says {kept} kept"
            )
    for s in manifest.sources:
        dropped = sum(s.dropped.values())
        if s.rows_read != s.rows_kept + dropped + s.rows_unselected:
            problems.append(
                f"source {s.path}: rows read {s.rows_read} != kept {s.rows_kept} + dropped {dropped}"
                f" + left out by its mixture {s.rows_unselected}"
            )
        if s.rows_unselected and not {"fraction", "sample", "weight"} & set(s.settings):
            problems.append(
                f"source {s.path}: {s.rows_unselected} rows left out, but it asks for no "
                "fraction, sample or weight"
            )
    return problems


def _check_split(  # noqa: C901, PLR0912, PLR0915 - one check per invariant of a split
    build: Path, split: str, info: SplitEntry, manifest: Manifest, seen: Counter
) -> list[str]:
    problems, rows, tokens, loss = [], 0, 0, 0
    examples: set = set()
    vocab = manifest.tokenizer.length
    ranges = [
        (s.example_id_start, s.example_id_start + s.rows_read * s.repeat) for s in manifest.sources
    ]
    for shard in info.shards:
        where = shard.path
        try:
            table = open_shard(build / where)
        except (OSError, pa.ArrowInvalid) as err:
            problems.append(f"{where}: not a readable Arrow stream ({err})")
            continue
        if not table.schema.equals(row_schema()):
            problems.append(f"{where}: Arrow schema differs from the contract: {table.schema}")
            continue
        table = table.combine_chunks()
        col = {
            name: table.column(name).chunk(0) if table.num_rows else None
            for name in table.column_names
        }
        if table.num_rows != shard.rows:
            problems.append(f"{where}: {table.num_rows} rows, the manifest says {shard.rows}")
        if not table.num_rows:
            continue
        ids, mask, lens, example_ids = (
            col[c] for c in (INPUT_IDS, LOSS_MASK, SEQ_LENS, EXAMPLE_IDS)
        )
        row_len = np.diff(ids.offsets.to_numpy())
        flat_ids, flat_mask = ids.values.to_numpy(), mask.values.to_numpy()
        flat_lens = lens.values.to_numpy()
        if not np.array_equal(row_len, np.diff(mask.offsets.to_numpy())):
            problems.append(f"{where}: input_ids and loss_mask lengths differ")
            continue
        sums = (
            np.add.reduceat(flat_lens, lens.offsets.to_numpy()[:-1])
            if len(flat_lens)
            else np.zeros(len(row_len))
        )
        bad = np.flatnonzero(sums != row_len)
        if len(bad):
            problems.append(
                f"{where}: row {bad[0]}: seq_lens sum to {sums[bad[0]]}, the row has {row_len[bad[0]]} tokens"
            )
        if (row_len > info.max_length).any():
            problems.append(f"{where}: a row is longer than max_length {info.max_length}")
        if (flat_lens <= 0).any():
            problems.append(f"{where}: a segment has no tokens")
        if not np.array_equal(
            np.diff(lens.offsets.to_numpy()), np.diff(example_ids.offsets.to_numpy())
        ):
            problems.append(f"{where}: seq_lens and example_ids lengths differ")
        starts = np.concatenate([[0], np.cumsum(flat_lens)[:-1]]) if len(flat_lens) else flat_lens
        if len(starts) and flat_mask[starts[starts < len(flat_mask)]].any():
            problems.append(
                f"{where}: a segment's first token is trained (loss_mask must be 0 there)"
            )
        if not np.isin(flat_mask, (0, 1)).all():
            problems.append(f"{where}: loss_mask holds values other than 0 and 1")
        if len(flat_ids) and (flat_ids.min() < 0 or flat_ids.max() >= vocab):
            problems.append(f"{where}: token ids outside [0, {vocab}) (the tokenizer's length)")
        if not np.array_equal(col[NUM_TOKENS].to_numpy(), row_len):
            problems.append(f"{where}: num_tokens differs from the row lengths")
        row_loss = (
            np.add.reduceat(flat_mask.astype(np.int64), ids.offsets.to_numpy()[:-1])
            if len(flat_mask)
            else row_len * 0
        )
        if not np.array_equal(col[NUM_LOSS_TOKENS].to_numpy(), row_loss):
            problems.append(f"{where}: num_loss_tokens differs from the loss masks")
        flat_examples = example_ids.values.to_numpy()
        inside = np.zeros(len(flat_examples), dtype=bool)
        for lo, hi in ranges:
            inside |= (flat_examples >= lo) & (flat_examples < hi)
        if not inside.all():
            problems.append(f"{where}: example_ids outside every source's range")
        seen.update(flat_examples.tolist())
        examples.update(flat_examples.tolist())
        rows += table.num_rows
        tokens += int(row_len.sum())
        loss += int(flat_mask.sum())
    if len(examples) != info.examples:
        problems.append(
            f"split {split}: {len(examples)} distinct examples in the shards, the manifest says {info.examples}"
        )
    if (rows, tokens, loss) != (info.rows, info.tokens, info.loss_tokens):
        problems.append(
            f"split {split}: rows/tokens/loss tokens are {rows}/{tokens}/{loss}, the manifest says {info.rows}/{info.tokens}/{info.loss_tokens}"
        )
    return problems
