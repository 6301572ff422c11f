"""Counts for one source as the build reads it: rows read, kept, dropped by reason, tokens."""

from array import array
from collections import Counter
from dataclasses import dataclass, field

from schemas.manifest import SourceEntry
from sftprep.stages.masks import Encoded
from sftprep.stages.sources import Source


@dataclass
class KeptRows:
    """Where each kept row of a source went in its spill, for choosing among them once the
    source is encoded (stages/mixture.py): a few bytes per row."""

    rows: array = field(default_factory=lambda: array("q"))
    """Row index in the source."""
    firsts: array = field(default_factory=lambda: array("q"))
    """Spill position of its first piece (its pieces follow it)."""
    pieces: array = field(default_factory=lambda: array("q"))
    cuts: array = field(default_factory=lambda: array("q"))
    """Tokens truncation cut from it."""

    def add(self, row: int, first: int, pieces: int, cut: int) -> None:
        """One kept row."""
        self.rows.append(row)
        self.firsts.append(first)
        self.pieces.append(pieces)
        self.cuts.append(cut)


@dataclass
class SourceStats:
    """Counts for one source, as the manifest records them (see SourceEntry)."""

    source: Source
    split: str
    sha256: str
    example_id_start: int = 0
    format: str = ""
    rows_read: int = 0
    rows_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    tokens: int = 0
    loss_tokens: int = 0
    truncated: int = 0
    truncated_tokens: int = 0
    split_examples: int = 0
    repeat: int = 1
    """Copies of each kept row (the source's `repeat`; under a sample or weight, the most any row got)."""
    examples: int = 0
    """Examples the build holds from this source, copies included."""
    kept_rows: KeptRows | None = None
    """Set for a source whose rows are chosen after it is encoded (a sample or a weight)."""
    spill_range: tuple[int, int] = (0, 0)
    """Spill positions [first, end) of this source's pieces, as read."""
    stamp: tuple = ()
    """sources.source_stamp before the build hashed the source (checked once it is read)."""
    encoded_by: Counter = field(default_factory=Counter)
    """Rows per encoder (fastokens, hf, hf-fallback; see fast_encoder.py); the manifest sums them."""
    located_by: Counter = field(default_factory=Counter)
    """Rows per way their turns were located (render.LOCATED_BY; "" for rows with none located)."""
    workers: int = 1
    """Processes that encoded this source (1: the build process; the manifest records the most)."""

    def count_kept_whole(self, rows: int, tokens: int, loss_tokens: int) -> None:
        """`rows` rows kept whole (no cut, one piece each), as count_kept counts each."""
        self.rows_kept += rows
        self.examples += rows * self.repeat
        self.tokens += tokens * self.repeat
        self.loss_tokens += loss_tokens * self.repeat

    def count_kept(self, pieces: list[Encoded], cut: int) -> None:
        """One row kept, as these pieces, after `cut` tokens were truncated away."""
        self.rows_kept += 1
        self.examples += self.repeat
        if cut:
            self.truncated += 1
            self.truncated_tokens += cut
        if len(pieces) > 1:
            self.split_examples += 1
        for piece in pieces:
            self.tokens += len(piece.input_ids) * self.repeat
            self.loss_tokens += piece.loss_tokens * self.repeat

    def entry(self, split_loss_tokens: int = 0) -> SourceEntry:
        """This source's record in the manifest; `split_loss_tokens`: of all sources of its split."""
        return SourceEntry(
            path=self.source.path,
            split=self.split,
            content_sha256=self.sha256,
            format=self.format,
            example_id_start=self.example_id_start,
            rows_read=self.rows_read,
            rows_kept=self.rows_kept,
            dropped=dict(sorted(self.dropped.items())),
            tokens=self.tokens,
            loss_tokens=self.loss_tokens,
            truncated=self.truncated,
            truncated_tokens=self.truncated_tokens,
            split_examples=self.split_examples,
            settings=dict(self.source.settings),
            repeat=self.repeat,
            examples=self.examples,
            rows_unselected=self.rows_read - self.rows_kept - sum(self.dropped.values()),
            loss_share=round(self.loss_tokens / split_loss_tokens, 6) if split_loss_tokens else 0.0,
            turns_located_by={way: n for way, n in sorted(self.located_by.items()) if way},
        )
