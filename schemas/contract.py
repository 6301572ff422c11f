"""Column names, file layout and format version of a build (format_version 1).

A build folder looks like::

    OUT/
      manifest.json          # written last: its presence means the build is complete
      train/00000.arrow ...  # Arrow IPC stream files, uncompressed, memory-mappable
      eval/00000.arrow ...   # only when an eval split was asked for

One row per packed sequence. Worked example: two examples of 3 and 2 tokens packed in one row::

    input_ids   = [5, 6, 7, 8, 9]
    loss_mask   = [0, 1, 1, 0, 1]   # 1 = counts toward the loss; 0 on each example's first token
    seq_lens    = [3, 2]            # sums to len(input_ids)
    example_ids = [17, 4]           # indices in the build's example order (see manifest sources)
"""

import json
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_SUFFIX = ".arrow"
SPLITS = ("train", "eval")

INPUT_IDS = "input_ids"
LOSS_MASK = "loss_mask"
SEQ_LENS = "seq_lens"
EXAMPLE_IDS = "example_ids"
NUM_TOKENS = "num_tokens"
NUM_LOSS_TOKENS = "num_loss_tokens"
COLUMNS = (INPUT_IDS, LOSS_MASK, SEQ_LENS, EXAMPLE_IDS, NUM_TOKENS, NUM_LOSS_TOKENS)


def row_schema() -> pa.Schema:
    """The Arrow schema every shard has, columns in this order."""
    return pa.schema(
        [
            pa.field(INPUT_IDS, pa.list_(pa.int32()), nullable=False),
            pa.field(LOSS_MASK, pa.list_(pa.uint8()), nullable=False),
            pa.field(SEQ_LENS, pa.list_(pa.int32()), nullable=False),
            pa.field(EXAMPLE_IDS, pa.list_(pa.int64()), nullable=False),
            pa.field(NUM_TOKENS, pa.int32(), nullable=False),
            pa.field(NUM_LOSS_TOKENS, pa.int32(), nullable=False),
        ]
    )


def shard_name(index: int) -> str:
    """File name of the shard with this index inside its split folder: 0 -> '00000.arrow'."""
    return f"{index:05d}{SHARD_SUFFIX}"


@lru_cache(maxsize=1)
def manifest_schema() -> dict:
    """The JSON Schema that every manifest.json validates against."""
    return json.loads((Path(__file__).with_name("manifest.schema.json")).read_text())
