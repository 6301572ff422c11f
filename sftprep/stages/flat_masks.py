"""Ids and loss masks of a whole chunk of fast-encoded rows at once, straight into PackedResults.

masks.finish_batch builds each row's ids and mask with a dozen numpy calls of ~1 us each and a
dataclass, then packed_results.pack_results lays them end to end again: at 200k Alpaca rows that
per-row glue cost more CPU than fastokens' encoding. Here every step runs once for the chunk,
with the rule of masks._encode_one, row for row (tested equal on real tokenizers):

1. each trained character span -> the tokens its bytes overlap (fast_batch.span_tokens);
2. those token ranges -> a mask over all the text tokens (+1 at each range's first token, -1 at
   its stop, a running sum);
3. the post-processor's prefix and suffix ids around each row (mask 0);
4. a second BOS dropped where the text already began with it and the prefix added one;
5. EOS appended where the row must end with it and does not (masked as the row says), else its
   last token's mask set so;
6. no row's first token trains (nothing before it predicts it).
"""

import numpy as np

from sftprep.errors import RowError
from sftprep.stages.fast_batch import FastBatch, before_each, span_tokens
from sftprep.stages.masks import finish_batch
from sftprep.stages.packed_results import PackedResults, pack_results
from sftprep.stages.render import Rendered


def packed_rows(
    batch: FastBatch,
    chosen: list[int],
    rendered: list[Rendered],
    row_indices: list[int],
    bos_eos: tuple[int | None, int | None],
    special_tokens: bool,
) -> PackedResults:
    """PackedResults of rows `chosen` of `batch` (trusted ones), `rendered[k]` and
    `row_indices[k]` being chosen[k]'s text and row index; `bos_eos`: the tokenizer's (BOS, EOS)
    ids; `special_tokens`: whether rows that ask for EOS get it (adds_special_tokens)."""
    if not chosen:  # every row of the chunk went to HF
        return pack_results([])
    starts = batch.offsets[chosen]
    counts = batch.offsets[np.asarray(chosen, dtype=np.int64) + 1] - starts
    text_ids, token_ends, before, shift = _text_tokens(batch, starts, counts)
    non_ascii = [batch.non_ascii[i] for i in chosen]
    found = span_tokens(token_ends, before, counts, shift, [r.spans for r in rendered], non_ascii)
    mask = _text_mask(len(text_ids), before, *found)
    ids, mask, lengths = _with_special(text_ids, mask, counts, batch.prefix, batch.suffix)
    bos_id, eos_id = bos_eos
    if bos_id is not None and len(batch.prefix):
        ids, mask, lengths = _one_bos(ids, mask, lengths, bos_id)
    if eos_id is not None and special_tokens:
        ids, mask, lengths = _with_eos(ids, mask, lengths, rendered, eos_id)
    row_starts = before_each(lengths)
    mask[row_starts[lengths > 0]] = 0
    return PackedResults(
        np.asarray(row_indices, dtype=np.int64),
        ids,
        mask,
        lengths,
        _row_sums(mask, row_starts, lengths),
        ["fastokens"] * len(chosen),
        [r.located_by for r in rendered],
    )


def _row_sums(mask: np.ndarray, row_starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """int64 trained tokens of each row (np.add.reduceat, its rows of no tokens set to 0)."""
    sums = np.zeros(len(lengths), dtype=np.int64)
    some = lengths > 0
    if some.any():
        sums[some] = np.add.reduceat(mask, row_starts[some], dtype=np.int64)
    return sums


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The indices start, start + 1, ..., start + count - 1 of every (start, count), end to end."""
    total = int(counts.sum())
    before = before_each(counts)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - before, counts)


def _text_tokens(batch: FastBatch, starts: np.ndarray, counts: np.ndarray) -> tuple:
    """The chosen rows' text ids end to end; their token byte ends, strictly increasing over the
    rows (fast_batch.span_tokens); the tokens and the bytes before each row. With every row of
    the batch chosen (the rule: fallbacks are rare), the batch's own arrays are all that."""
    if len(starts) == len(batch):
        return batch.ids, batch.cum[1:], starts, batch.cum[starts]
    at = _ranges(starts, counts)
    own = batch.cum[at + 1] - np.repeat(batch.cum[starts], counts)  # from each row's start
    before = before_each(counts)
    shift = before_each(batch.cum[starts + counts] - batch.cum[starts])
    return batch.ids[at], own + np.repeat(shift, counts), before, shift


def _text_mask(tokens: int, before, rows, first, stop) -> np.ndarray:
    """uint8 over the text tokens: 1 where a token is in one of the [first, stop) ranges (row
    relative) of rows `rows`."""
    edges = np.bincount(before[rows] + first, minlength=tokens + 1)
    edges -= np.bincount(before[rows] + stop, minlength=tokens + 1)
    return (np.cumsum(edges[:-1]) > 0).astype(np.uint8)


def _with_special(ids, mask, counts, prefix: np.ndarray, suffix: np.ndarray) -> tuple:
    """Each row's ids inside the post-processor's prefix and suffix (their mask 0), the lengths."""
    if not len(prefix) and not len(suffix):
        return ids, mask, counts.astype(np.int64)
    lengths = (counts + len(prefix) + len(suffix)).astype(np.int64)
    row_starts = before_each(lengths)
    out_ids = np.empty(int(lengths.sum()), dtype=np.int32)
    out_mask = np.zeros(len(out_ids), dtype=np.uint8)
    text_at = _ranges(row_starts + len(prefix), counts)
    out_ids[text_at], out_mask[text_at] = ids, mask
    for j, token in enumerate(prefix.tolist()):
        out_ids[row_starts + j] = token
    for j, token in enumerate(suffix.tolist()):
        out_ids[row_starts + len(prefix) + counts + j] = token
    return out_ids, out_mask, lengths


def _one_bos(ids, mask, lengths, bos_id: int) -> tuple:
    """Drop the first token of each row that begins with two BOS (the first the prefix's)."""
    starts = before_each(lengths)
    long = lengths >= 2
    twice = np.zeros(len(lengths), dtype=bool)
    twice[long] = (ids[starts[long]] == bos_id) & (ids[starts[long] + 1] == bos_id)
    if not twice.any():
        return ids, mask, lengths
    drop = starts[twice]
    return np.delete(ids, drop), np.delete(mask, drop), lengths - twice


def _with_eos(ids, mask, lengths, rendered: list[Rendered], eos_id: int) -> tuple:
    """EOS after each row that asks for it (Rendered.append_eos) and does not end with it, masked
    as Rendered.eos_trained says; a row that already ends with EOS gets that mask on it instead."""
    asks = np.fromiter((r.append_eos for r in rendered), dtype=bool, count=len(rendered))
    if not asks.any():
        return ids, mask, lengths
    trained = np.fromiter((r.eos_trained for r in rendered), dtype=np.uint8, count=len(rendered))
    stops = np.cumsum(lengths)
    last = np.where(lengths > 0, ids[np.maximum(stops - 1, 0)] if len(ids) else -1, -1)
    ends_with = asks & (lengths > 0) & (last == eos_id)
    mask = mask.copy()
    mask[stops[ends_with] - 1] = trained[ends_with]
    append = asks & ~ends_with
    if not append.any():
        return ids, mask, lengths
    at = stops[append]
    ids = np.insert(ids, at, np.int32(eos_id))
    mask = np.insert(mask, at, trained[append])
    return ids, mask, lengths + append


def flat_setting(rendered: list[Rendered], special_tokens: bool) -> bool | None:
    """add_special_tokens of one fast encode call for the whole chunk, or None when its rows
    cannot go through packed_rows: none, two settings among them, or id-marker rows (their
    trained tokens are found on the ids, row by row)."""
    settings = {r.add_special_tokens and special_tokens for r in rendered}
    if len(settings) != 1 or any(r.id_markers for r in rendered):
        return None
    return settings.pop()


def finish_flat(prepared: tuple, batch: FastBatch, bos_eos: tuple, special_tokens: bool):
    """RowEncoder.finish of a chunk encoded as one FastBatch: its PackedResults, bad rows
    included; rows HF encoded (the fallback) go through masks.finish_batch, row by row."""
    results, rendered, slots = prepared
    trusted = [i for i in range(len(rendered)) if i not in batch.fallback]
    packed = packed_rows(
        batch, trusted, [rendered[i] for i in trusted], [results[slots[i]][0] for i in trusted],
        bos_eos, special_tokens,
    )  # fmt: skip
    errors = [(i, e) for i, e in results if isinstance(e, RowError)]
    if len(trusted) == len(rendered):
        packed.errors = errors
        return packed
    others = sorted(batch.fallback)
    again = finish_batch(
        [rendered[i] for i in others], [batch.fallback[i] for i in others], *bos_eos,
        special_tokens, fast=True,
    )  # fmt: skip
    pairs = [(results[slots[i]][0], enc) for i, enc in zip(others, again)]
    return pack_results(sorted(packed.unpacked() + pairs + errors, key=lambda pair: pair[0]))
