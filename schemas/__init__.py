"""The shard contract shared by sftprep (writer) and sfttrain (reader).

Neither package spells a column name, a file name or the format version as a loose literal:
they import them from here. The manifest layout is `manifest.schema.json` beside this file.
"""

from schemas.contract import (
    COLUMNS,
    EXAMPLE_IDS,
    FORMAT_VERSION,
    INPUT_IDS,
    LOSS_MASK,
    MANIFEST_NAME,
    NUM_LOSS_TOKENS,
    NUM_TOKENS,
    SEQ_LENS,
    SHARD_SUFFIX,
    SPLITS,
    manifest_schema,
    row_schema,
    shard_name,
)
from schemas.fingerprint import tokenizer_fingerprint

__all__ = [
    "COLUMNS",
    "EXAMPLE_IDS",
    "FORMAT_VERSION",
    "INPUT_IDS",
    "LOSS_MASK",
    "MANIFEST_NAME",
    "NUM_LOSS_TOKENS",
    "NUM_TOKENS",
    "SEQ_LENS",
    "SHARD_SUFFIX",
    "SPLITS",
    "manifest_schema",
    "row_schema",
    "shard_name",
    "tokenizer_fingerprint",
]
