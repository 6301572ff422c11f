"""What the fast encoder gives for a batch of texts: fastokens' ids end to end, the rows it can
vouch for, and what masks need of them (each token's byte end), without per-row arrays.

fastokens gives no offsets; masks do not need them. Each token's byte length comes from the
vocabulary (a byte-level token string has one character per byte; an added token is its content),
so the ids' cumulative byte lengths are each token's end, and a character span maps to the tokens
overlapping its bytes with two binary searches: the HF rule (a token overlapping a span trains, a
character split over several tokens trains them all), without per-token Python.

A row is trusted (see `trusted_rows`) when fastokens did not raise on it, every one of its tokens
has at least one byte, the bytes add up to the text's UTF-8 length, and, for an NFC tokenizer,
the text is NFC already; HF encodes the others (fast_encoder.FastBackend).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FastEncoding:
    """One row's ids from the fast encoder, with what masks need: each token's byte end."""

    ids: np.ndarray
    """int32, special tokens of the post-processor included."""
    ends: np.ndarray
    """int64 byte end of each text token (cumulative byte lengths), prefix tokens excluded."""
    prefix: int
    """Tokens the post-processor put before the text's own (e.g. BOS)."""
    non_ascii: str | None
    """Its text when it is not ASCII (byte offsets worked out at span ends, see _span_bytes), else
    None (a character is a byte)."""

    def __len__(self) -> int:
        return len(self.ids)

    def token_range(self, start: int, end: int) -> tuple[int, int] | None:
        """Indices [first, stop) of the tokens whose bytes overlap characters [start, end)."""
        found = self.token_ranges([(start, end)])
        return found[0] if found else None

    def token_ranges(self, spans) -> list[tuple[int, int]]:
        """[first, stop) token indices of every (start, end) character span, from the tokens' byte
        ends (span_tokens, as one row); spans that no token overlaps are left out."""
        if not spans:
            return []
        zero = np.zeros(1, dtype=np.int64)
        count = np.full(1, len(self.ends), dtype=np.int64)
        _, first, stop = span_tokens(self.ends, zero, count, zero, [spans], [self.non_ascii])
        return [(a + self.prefix, b + self.prefix) for a, b in zip(first.tolist(), stop.tolist())]

    def first_token_is_added(self) -> bool:
        """Whether token 0 is the post-processor's (no characters of the text)."""
        return self.prefix > 0


@dataclass
class FastBatch:
    """One encode call's texts, flat: fastokens' ids of every row end to end, where each row's
    begin, every token's byte end, and HF's Encoding of each row fastokens could not vouch for."""

    ids: np.ndarray
    """int32 text ids of every row end to end (no special tokens; untrusted rows' ids left in)."""
    offsets: np.ndarray
    """int64, rows + 1: row i's ids are ids[offsets[i]:offsets[i + 1]]."""
    cum: np.ndarray
    """int64, len(ids) + 1: the bytes of all the ids before each one (0 first)."""
    non_ascii: list
    """Per row: its text when it is not ASCII (its characters' byte offsets are then worked out
    where a span needs them), else None (a character is a byte)."""
    prefix: np.ndarray
    """int32 ids the post-processor puts before each text (e.g. BOS)."""
    suffix: np.ndarray
    """int32 ids it puts after each text."""
    fallback: dict = field(default_factory=dict)
    """row -> HF's Encoding, for every row not trusted (see the module)."""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def encoding(self, i: int):
        """Row i as a FastEncoding, or HF's Encoding where it is a fallback row."""
        if i in self.fallback:
            return self.fallback[i]
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return FastEncoding(
            np.concatenate([self.prefix, self.ids[a:b], self.suffix]),
            self.cum[a + 1 : b + 1] - self.cum[a],
            len(self.prefix),
            self.non_ascii[i],
        )


def flat_batch(texts: list[str], ids, offsets, failed: set, lengths: np.ndarray, nfc: bool):
    """(the FastBatch of fastokens' flat `ids`/`offsets` for `texts`, without fallbacks yet; the
    rows it cannot vouch for). `failed`: the rows fastokens raised on; `lengths`: every id's
    byte length. The byte sums of all rows come from one cumulative sum over the whole batch
    (per-row numpy work cost twice the encoding itself); per row, only str methods run."""
    ids = np.asarray(ids).astype(np.int32)
    offsets = np.asarray(offsets).astype(np.int64)
    token_bytes = lengths[ids]
    cum = np.concatenate([[0], np.cumsum(token_bytes, dtype=np.int64)])
    starts, stops = offsets[:-1], offsets[1:]
    totals = (cum[stops] - cum[starts]).tolist()
    no_empty = np.ones(len(texts), dtype=bool)  # rows with a token of no bytes: rare, so searched
    no_empty[np.searchsorted(offsets, np.flatnonzero(token_bytes <= 0), side="right") - 1] = False
    no_empty = no_empty.tolist()
    non_ascii: list = [None] * len(texts)
    untrusted = []
    for i, text in enumerate(texts):
        ascii_only = text.isascii()
        if not ascii_only:
            non_ascii[i] = text
        if (
            totals[i] != (len(text) if ascii_only else len(text.encode("utf-8")))
            or not no_empty[i]
            or i in failed
            or (nfc and not ascii_only and not unicodedata.is_normalized("NFC", text))
        ):
            untrusted.append(i)
    none = np.zeros(0, np.int32)
    return FastBatch(ids, offsets, cum, non_ascii, none, none), untrusted


def batch_token_ranges(encodings: list[FastEncoding], spans: list) -> list[list[tuple[int, int]]]:
    """encodings[i].token_ranges(spans[i]) for every row, in two binary searches for all of them.

    Per row, the numpy calls' own overhead (~1 us each, six of them) cost more than the searches,
    so the rows' token ends are laid end to end, each shifted by the bytes of the rows before:
    that array is strictly increasing (every token has at least one byte; untrusted rows never
    get here), so a row's answers are its global counts less the tokens before it, exactly as in
    token_ranges (tested equal on random spans).
    """
    counts = np.fromiter((len(e.ends) for e in encodings), dtype=np.int64, count=len(encodings))
    if not counts.sum():
        return [[] for _ in encodings]
    before = before_each(counts)  # tokens of the rows before each
    flat = np.concatenate([e.ends for e in encodings])
    totals = np.where(counts > 0, flat[np.maximum(before + counts - 1, 0)], 0)
    shift = before_each(totals)  # bytes of the rows before each
    shifted = flat + np.repeat(shift, counts)
    found = span_tokens(shifted, before, counts, shift, spans, [e.non_ascii for e in encodings])
    out: list[list[tuple[int, int]]] = [[] for _ in encodings]
    for i, a, b in zip(*(part.tolist() for part in found)):
        prefix = encodings[i].prefix
        out[i].append((a + prefix, b + prefix))
    return out


def span_tokens(ends, before, counts, shift, spans: list, non_ascii: list) -> tuple:
    """(row, first, stop) arrays of the token ranges that rows' character spans overlap, in row
    then span order, spans no token overlaps left out. `ends`: every row's token byte ends, rows
    end to end, each row's shifted by `shift` (the bytes of the rows before it), so the whole
    array is strictly increasing and two binary searches answer every span; `before`: tokens
    before each row; `counts`: its tokens; `non_ascii`: per row None (ASCII: a character is a
    byte) or its text (its span ends' byte offsets then come from _span_bytes)."""
    row_of, chars, places = [], [], []
    for i, (row_spans, text) in enumerate(zip(spans, non_ascii)):
        at = _span_bytes(text, row_spans) if text is not None and row_spans else None
        for start, end in row_spans:
            row_of.append(i)
            chars.append((start, end))
            places.append((start, end) if at is None else (at[start], at[end]))
    if not row_of:
        return (np.zeros(0, np.int64),) * 3
    rows = np.asarray(row_of, dtype=np.int64)
    chars_, places_ = np.asarray(chars, dtype=np.int64), np.asarray(places, dtype=np.int64)
    b0, b1 = places_[:, 0] + shift[rows], places_[:, 1] + shift[rows]
    first = np.searchsorted(ends, b0, side="right") - before[rows]
    stop = np.minimum(np.searchsorted(ends, b1, side="left") - before[rows] + 1, counts[rows])
    keep = (chars_[:, 1] > chars_[:, 0]) & (first < stop)
    return rows[keep], first[keep], stop[keep]


def before_each(counts: np.ndarray) -> np.ndarray:
    """The sum of the counts before each one (0 first; empty for no counts)."""
    return np.cumsum(counts) - counts


def _span_bytes(text: str, spans) -> dict:
    """character -> UTF-8 byte offset of every span end of a non-ASCII text: the text between
    consecutive span ends encoded once each, so a row costs one pass over its text however many
    spans it has (no per-character array)."""
    places, at, before = {}, 0, 0
    for point in sorted({p for span in spans for p in span}):
        before += len(text[at:point].encode("utf-8"))
        places[point], at = before, point
    return places
