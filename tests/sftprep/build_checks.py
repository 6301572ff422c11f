"""Independent checks of a finished build: read its shards back and test the contract's invariants.

Written from the contract in DESIGN.md, not from sftprep's code, so a bug there cannot hide here.
"""

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa

from schemas import (
    EXAMPLE_IDS,
    INPUT_IDS,
    LOSS_MASK,
    MANIFEST_NAME,
    NUM_LOSS_TOKENS,
    NUM_TOKENS,
    SEQ_LENS,
    row_schema,
)


def load_manifest(build: Path) -> dict:
    return json.loads((Path(build) / MANIFEST_NAME).read_text())


def read_rows(build: Path, split: str = "train") -> list[dict]:
    """Every row of a split as Python lists, shards in manifest order, read memory-mapped."""
    manifest = load_manifest(build)
    rows = []
    for shard in manifest["splits"][split]["shards"]:
        with pa.memory_map(str(Path(build) / shard["path"])) as source:
            table = pa.ipc.open_stream(source).read_all()
        assert table.schema.equals(row_schema()), table.schema
        rows.extend(table.to_pylist())
    return rows


def examples_by_id(build: Path, split: str = "train") -> dict[int, tuple[list, list]]:
    """example_id -> (ids, loss_mask) for builds where examples stay whole (bfd, none)."""
    out = {}
    for row in read_rows(build, split):
        start = 0
        for length, example_id in zip(row[SEQ_LENS], row[EXAMPLE_IDS]):
            assert example_id not in out, f"example {example_id} appears twice"
            out[example_id] = (
                row[INPUT_IDS][start : start + length],
                row[LOSS_MASK][start : start + length],
            )
            start += length
    return out


def check_build(build: Path) -> dict:
    """Assert every invariant of the contract; return counts that tests use to rule out vacuous passes."""
    build = Path(build)
    manifest = load_manifest(build)
    seen: Counter = Counter()
    counts = {"rows": 0, "multi_segment_rows": 0, "segments": 0, "loss_tokens": 0}
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            data = (build / shard["path"]).read_bytes()
            assert (
                len(data) == shard["bytes"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
            )
        rows = read_rows(build, split)
        assert len(rows) == info["rows"] == sum(s["rows"] for s in info["shards"])
        tokens = loss = 0
        for row in rows:
            ids, mask, lens = row[INPUT_IDS], row[LOSS_MASK], row[SEQ_LENS]
            assert sum(lens) == len(ids) == len(mask) == row[NUM_TOKENS] <= info["max_length"]
            assert len(lens) == len(row[EXAMPLE_IDS]) and all(n > 0 for n in lens)
            assert sum(mask) == row[NUM_LOSS_TOKENS] and set(mask) <= {0, 1}
            start = 0
            for n in lens:
                assert mask[start] == 0, "the first token of a segment must not be trained"
                start += n
            tokens += len(ids)
            loss += sum(mask)
            seen.update(row[EXAMPLE_IDS])
            counts["multi_segment_rows"] += len(lens) > 1
            counts["segments"] += len(lens)
        assert tokens == info["tokens"] and loss == info["loss_tokens"]
        counts["rows"] += len(rows)
        counts["loss_tokens"] += loss
    kept = sum(s["examples"] for s in manifest["sources"])
    spans = []
    for s in manifest["sources"]:
        unselected = s.get("rows_unselected", 0)
        assert s["rows_read"] == s["rows_kept"] + sum(s["dropped"].values()) + unselected, s
        spans.append(
            (s["example_id_start"], s["example_id_start"] + s["rows_read"] * s.get("repeat", 1))
        )
    assert all(any(a <= i < b for a, b in spans) for i in seen), (
        "an example id outside every source"
    )
    if manifest["config"]["packing"] != "wrapped" and manifest["config"]["overlong"] != "split":
        assert all(n == 1 for n in seen.values()), "an example appears in more than one row"
        assert len(seen) == kept
    assert manifest["dropped"] == dict(
        sum((Counter(s["dropped"]) for s in manifest["sources"]), Counter())
    )
    return counts
