"""Read a build written by `sftprep build`: check its manifest, then memory-map its shards.

Everything here refuses early, before a model is loaded, and says what differs and what to do:
no manifest (the build is incomplete), an unknown format_version, a manifest that does not follow
schemas/manifest.schema.json, shards missing or of the wrong size (or sha256 with `verify`), and a
tokenizer whose fingerprint is not the build's. Shards are opened with `pa.memory_map`, zero copy:
a row is a set of numpy views into the mapped file, nothing is converted to Python lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import (
    EXAMPLE_IDS,
    INPUT_IDS,
    LOSS_MASK,
    MANIFEST_NAME,
    NUM_TOKENS,
    SEQ_LENS,
    row_schema,
    tokenizer_fingerprint,
)
from schemas.manifest import (
    Manifest,
    ManifestError,
    SplitEntry,
    open_shard,
    shard_problems,
)
from schemas.manifest import read_manifest as read_build_manifest
from sfttrain.errors import SfttrainError

LIST_COLUMNS = (INPUT_IDS, LOSS_MASK, SEQ_LENS, EXAMPLE_IDS)


class PackedRows:
    """The rows of one split, memory-mapped. `rows[i]` is a dict of numpy views, one per list column.

    Worked example: a row packing examples of 3 and 2 tokens gives
    {input_ids: [5, 6, 7, 8, 9], loss_mask: [0, 1, 1, 0, 1], seq_lens: [3, 2], example_ids: [17, 4]}.
    """

    def __init__(self, tables: list[pa.Table], shard_names: list[str], vocab: int):
        batches, self._where = [], []  # per record batch: (shard name, its first row in the shard)
        for table, name in zip(tables, shard_names):
            first = 0
            for b in table.to_batches():
                if b.num_rows:
                    batches.append(b)
                    self._where.append((name, first))
                first += b.num_rows
        # per record batch: {column: (offsets, values)} as zero-copy numpy views
        self._chunks = [
            {
                c: (b.column(c).offsets.to_numpy(), b.column(c).values.to_numpy())
                for c in LIST_COLUMNS
            }
            for b in batches
        ]
        self._starts = np.cumsum([0] + [b.num_rows for b in batches])
        self.num_tokens = np.concatenate(
            [b.column(NUM_TOKENS).to_numpy() for b in batches] or [np.zeros(0, np.int32)]
        )
        self._batches = batches
        self.vocab = vocab
        """Token ids must lie in [0, vocab): the build's tokenizer length."""

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        chunk = int(np.searchsorted(self._starts, index, side="right")) - 1
        local = index - int(self._starts[chunk])
        row = {
            c: values[offsets[local] : offsets[local + 1]]
            for c, (offsets, values) in self._chunks[chunk].items()
        }
        broken = row_problem(row, int(self.num_tokens[index]), self.vocab)
        if broken:
            shard, first = self._where[chunk]
            raise SfttrainError(
                f"{shard}, row {first + local}: {broken}, which breaks the shard contract; "
                "the build is damaged: run `sftprep verify` on it and rebuild"
            )
        return row

    def max_token_id(self) -> int:
        """The largest id in input_ids (-1 when empty), computed in Arrow without copying."""
        maxima = [pc.max(b.column(INPUT_IDS).flatten()).as_py() for b in self._batches]
        return max([m for m in maxima if m is not None], default=-1)


def row_problem(row: dict[str, np.ndarray], num_tokens: int, vocab: int) -> str:
    """What is wrong with one packed row ("" when nothing): checked as each row is read, a few
    vectorized reductions (bench/row_checks.py measures their cost against a training step)."""
    ids, mask, lens = row[INPUT_IDS], row[LOSS_MASK], row[SEQ_LENS]
    n = len(ids)
    if len(mask) != n:
        return f"{len(mask)} loss_mask values for {n} input_ids"
    if num_tokens != n:
        return f"num_tokens is {num_tokens} but the row has {n} tokens"
    if int(lens.sum()) != n or (len(lens) and int(lens.min()) <= 0):
        return f"seq_lens {lens.tolist()[:8]} do not split the row's {n} tokens"
    if n and int(mask.max()) > 1:
        return f"loss_mask holds {int(mask.max())} (only 0 and 1 are allowed)"
    if n and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        return f"a token id outside [0, {vocab}) ({int(ids.min())}..{int(ids.max())})"
    return ""


@dataclass(frozen=True)
class Build:
    """A checked build: its folder, its manifest, and the memory-mapped rows of each split."""

    path: Path
    """The build folder."""
    manifest: Manifest
    """manifest.json, read and validated by schemas.manifest.read_manifest."""
    train: PackedRows
    """Rows of the train split."""
    eval: PackedRows | None
    """Rows of the eval split, None when the build has none."""

    def max_token_id(self) -> int:
        """The largest token id in any split."""
        return max(rows.max_token_id() for rows in (self.train, self.eval) if rows is not None)


def open_build(data_dir: str | Path, verify: bool = False) -> Build:
    """Check the manifest and the shards of a build folder, then memory-map every split."""
    path = Path(data_dir)
    manifest = read_manifest(path)
    splits = manifest.splits
    check_shards(path, manifest, verify)
    if any(
        len(set(s.path for s in split.shards)) != len(split.shards) for split in splits.values()
    ):
        raise SfttrainError(
            f"--data {path}: the manifest lists a shard twice: rebuild with `sftprep build`"
        )
    vocab = manifest.tokenizer.length
    opened = {name: _open_split(path, name, splits[name], vocab) for name in splits}
    if not len(opened["train"]) or not manifest.train.examples:
        raise SfttrainError(
            f"--data {path}: the train split has no examples (every row was dropped? see `sftprep stats {path}`): "
            "nothing to train on; rebuild with data that keeps some rows"
        )
    return Build(path=path, manifest=manifest, train=opened["train"], eval=opened.get("eval"))


def read_manifest(path: Path) -> Manifest:
    """The build's manifest (schemas.manifest.read_manifest), its refusals as SfttrainErrors."""
    try:
        return read_build_manifest(path)
    except ManifestError as err:
        raise SfttrainError(f"--data {err}") from None


def check_shards(path: Path, manifest: Manifest, verify: bool) -> None:
    """Every shard exists with the manifest's size (and sha256 when verify); report all at once."""
    problems = shard_problems(path, manifest, verify)
    if problems:
        raise SfttrainError(
            f"--data {path}: shards do not match {MANIFEST_NAME}: "
            + "; ".join(problems)
            + ". The folder was changed or copied partly: copy the whole build again or rerun `sftprep build`"
        )


def check_tokenizer(manifest: Manifest, tokenizer) -> list[str]:
    """Match a transformers tokenizer to the build's; add the build's added tokens to it.

    Returns the tokens this call added (empty when the tokenizer already had them). Raises when
    the tokenizer's fingerprint is neither the build's base fingerprint (before added tokens) nor
    its final one.
    """
    info = manifest.tokenizer
    final = info.fingerprint
    base = info.base_fingerprint
    mine = tokenizer_fingerprint(tokenizer.backend_tokenizer)
    source = getattr(tokenizer, "name_or_path", "?")
    if mine == final:
        return []
    if mine != base:
        raise SfttrainError(
            f"the tokenizer {source} is not the one the build used ({info.name_or_path}): their fingerprints differ "
            f"(tokenizer {mine[:12]}..., build {base[:12]}...), so token ids would mean different things. "
            "Rebuild the data with the model's tokenizer (`sftprep build --tokenizer MODEL`), or train "
            "the model the build was made for"
        )
    added = list(info.added_tokens)
    tokenizer.add_tokens(added, special_tokens=True)
    after = tokenizer_fingerprint(tokenizer.backend_tokenizer)
    if after != final:
        raise SfttrainError(
            f"the tokenizer {source} matches the build's base tokenizer, but after adding the build's added_tokens "
            f"({', '.join(added) or 'none'}) its fingerprint is {after[:12]}..., not the build's {final[:12]}... "
            "(the tokens got other ids): rebuild the data with `sftprep build`, or pass --tokenizer with the tokenizer "
            "the build saved"
        )
    return added


def _open_split(path: Path, name: str, info: SplitEntry, vocab: int) -> PackedRows:
    """Memory-map one split's shards and check their schema and row counts."""
    tables = []
    for shard in info.shards:
        try:
            table = open_shard(path / shard.path)
        except (OSError, pa.ArrowInvalid) as err:
            raise SfttrainError(
                f"--data {path}: {shard.path} is not a readable Arrow stream ({err}): rebuild with `sftprep build`"
            ) from None
        if not table.schema.equals(row_schema()):
            raise SfttrainError(
                f"{shard.path} has columns {table.schema.names} with types {[str(t) for t in table.schema.types]}, "
                f"not the shard contract's {row_schema().names}: rebuild with `sftprep build`"
            )
        if table.num_rows != shard.rows:
            raise SfttrainError(
                f"{shard.path} has {table.num_rows} rows, the manifest says {shard.rows}: rebuild with `sftprep build`"
            )
        tables.append(table)
    return PackedRows(tables, [shard.path for shard in info.shards], vocab)
