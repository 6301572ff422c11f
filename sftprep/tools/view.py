"""Read a finished build back for people: its manifest, its rows, which source each example came
from, and its tokens decoded one by one with the build's own tokenizer.

Used by `sftprep inspect`, `stats` and `diff`; reads shards memory-mapped and never writes.
"""

from dataclasses import dataclass, field
from functools import cached_property
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
    tokenizer_fingerprint,
)
from schemas.manifest import ManifestError, SplitEntry, open_shard, read_manifest
from sftprep.config import recorded_config
from sftprep.errors import SftprepError


@dataclass
class Token:
    """One token of a row as a person reads it."""

    id: int
    text: str
    """Its decoded text; "" for a token whose bytes finish in a later token (part of one character)."""
    trained: bool
    special: bool


@dataclass
class Segment:
    """One example (or the piece of one) packed in a row."""

    example_id: int
    source: str
    source_row: int | None
    tokens: list[Token] = field(default_factory=list)


@dataclass
class DecodedRow:
    """A packed row, split into its segments, with the totals the shard stores."""

    split: str
    index: int
    num_tokens: int
    num_loss_tokens: int
    max_length: int
    segments: list[Segment]

    @property
    def fill(self) -> float:
        """num_tokens / max_length."""
        return self.num_tokens / self.max_length if self.max_length else 0.0


class BuildView:
    """A build folder opened for reading. `tokenizer` overrides the path the manifest records."""

    def __init__(self, build_dir: str | Path, tokenizer: str | None = None):
        self.dir = Path(build_dir)
        try:
            self.manifest = read_manifest(self.dir)
        except ManifestError as err:
            raise SftprepError(str(err)) from None
        self._tokenizer_path = tokenizer
        self._tables: dict[tuple[str, int], pa.Table] = {}

    @property
    def splits(self) -> list[str]:
        return list(self.manifest.splits)

    def split_info(self, split: str) -> SplitEntry:
        """The manifest's entry for `split`; an error naming the splits there are otherwise."""
        if split not in self.manifest.splits:
            raise SftprepError(
                f"--split {split}: this build has no such split; it has {', '.join(self.splits)}"
            )
        return self.manifest.splits[split]

    def table(self, split: str, shard: int) -> pa.Table:
        """One shard as an Arrow table, memory-mapped."""
        key = (split, shard)
        if key not in self._tables:
            where = self.dir / self.split_info(split).shards[shard].path
            try:
                self._tables[key] = open_shard(where).combine_chunks()
            except (OSError, pa.ArrowInvalid) as err:
                raise SftprepError(
                    f"{where}: cannot read this shard ({err}); check the build with `sftprep verify {self.dir}`"
                ) from None
        return self._tables[key]

    def column(self, split: str, name: str) -> np.ndarray:
        """A scalar column (e.g. num_tokens) of every row of a split, shards in order."""
        parts = [
            self.table(split, i).column(name).to_numpy()
            for i in range(len(self.split_info(split).shards))
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def row(self, split: str, index: int) -> dict:
        """Row `index` of `split` (0-based, over all its shards) as Python lists."""
        info = self.split_info(split)
        if not 0 <= index < info.rows:
            raise SftprepError(f"--row {index}: split {split} has rows 0 to {info.rows - 1}")
        for shard_index, shard in enumerate(info.shards):
            if index < shard.rows:
                return self.table(split, shard_index).slice(index, 1).to_pylist()[0]
            index -= shard.rows
        raise SftprepError(
            f"split {split}: the shards hold fewer rows than the manifest says; run `sftprep verify {self.dir}`"
        )

    def find_example(self, example_id: int, splits: list[str]) -> list[tuple[str, int]]:
        """(split, row) of every row holding a segment of `example_id`, searched in `splits`."""
        found = []
        for split in splits:
            first_row = 0
            for shard_index, shard in enumerate(self.split_info(split).shards):
                ids = (
                    self.table(split, shard_index).column(EXAMPLE_IDS).chunk(0)
                    if shard.rows
                    else None
                )
                if ids is not None:
                    hits = np.flatnonzero(ids.values.to_numpy() == example_id)
                    rows = np.searchsorted(ids.offsets.to_numpy(), hits, side="right") - 1
                    found += [(split, first_row + int(r)) for r in dict.fromkeys(rows.tolist())]
                first_row += shard.rows
        return found

    def source_of(self, example_id: int) -> tuple[str, int | None]:
        """(source path, 0-based row in that file) of an example id, from the manifest's ranges."""
        for source in self.manifest.sources:
            start = source.example_id_start
            if start <= example_id < start + source.rows_read * source.repeat:
                return source.path, (example_id - start) // source.repeat
        return "(no source)", None

    @cached_property
    def tokenizer(self):
        """The build's tokenizer (a `tokenizers.Tokenizer`), with any tokens the build added."""
        from sftprep.stages.tokenizer import load_tokenizer

        recorded = self.manifest.tokenizer
        path = self._tokenizer_path or recorded.name_or_path
        template = "chatml" if recorded_config(self.manifest).chat_template == "chatml" else None
        loaded = load_tokenizer(path, template)
        backend = loaded.backend
        if tokenizer_fingerprint(backend) != recorded.fingerprint:
            raise SftprepError(
                f"tokenizer {path} is not the one {self.dir} was built with (fingerprint {tokenizer_fingerprint(backend)[:12]}, "
                f"the build's is {recorded.fingerprint[:12]}); pass --tokenizer with the build's tokenizer folder"
            )
        return backend

    def decode(self, split: str, index: int) -> DecodedRow:
        """Row `index` of `split`, decoded token by token into its segments."""
        row = self.row(split, index)
        segments, start = [], 0
        for length, example_id in zip(row[SEQ_LENS], row[EXAMPLE_IDS]):
            source, source_row = self.source_of(example_id)
            ids, mask = (
                row[INPUT_IDS][start : start + length],
                row[LOSS_MASK][start : start + length],
            )
            segments.append(
                Segment(example_id, source, source_row, decode_tokens(self.tokenizer, ids, mask))
            )
            start += length
        return DecodedRow(
            split,
            index,
            row[NUM_TOKENS],
            row[NUM_LOSS_TOKENS],
            self.split_info(split).max_length,
            segments,
        )


def special_ids(backend) -> set[int]:
    """Ids of the tokenizer's special added tokens (e.g. <|im_end|>)."""
    return {i for i, token in backend.get_added_tokens_decoder().items() if token.special}


def decode_tokens(backend, ids: list[int], mask: list[int]) -> list[Token]:
    """Decode one example's ids one at a time, as a stream, so that a character spread over several
    byte-level tokens appears whole on the token that completes it (the others get "")."""
    special = special_ids(backend)
    vocab = backend.get_vocab_size(with_added_tokens=True)
    if bad := [i for i in ids if not 0 <= i < vocab]:
        raise SftprepError(
            f"token id {bad[0]} is outside the tokenizer's {vocab} ids: the build is damaged; "
            "run `sftprep verify` on it and rebuild"
        )
    try:
        from tokenizers.decoders import DecodeStream
    except (
        ImportError
    ):  # tokenizers < 0.21: token by token, multi-byte characters may show as U+FFFD
        return [
            Token(i, backend.decode([i], skip_special_tokens=False), bool(m), i in special)
            for i, m in zip(ids, mask)
        ]
    stream = DecodeStream(skip_special_tokens=False)
    return [
        Token(i, stream.step(backend, i) or "", bool(m), i in special) for i, m in zip(ids, mask)
    ]


def token_texts(backend, ids: list[int]) -> list[str]:
    """Each id's text, decoded as one stream (see decode_tokens)."""
    return [t.text for t in decode_tokens(backend, ids, [0] * len(ids))]
