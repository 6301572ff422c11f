"""`sftprep diff`: what differs between two builds, from their config down to the first token.

Two builds with the same fingerprint hold the same rows: that is reported as `identical`. Otherwise
every difference is listed as `key: a: x → b: y`, section by section (config, tokenizer, sources,
splits), then the first few examples (by example id, whole in both builds) whose tokens or loss
mask differ, each with the first differing position and a few decoded tokens of context.
"""

from dataclasses import dataclass

import numpy as np

from schemas import EXAMPLE_IDS, INPUT_IDS, LOSS_MASK, SEQ_LENS
from schemas.manifest import SourceEntry, SplitEntry, shard_problems
from sftprep.errors import SftprepError
from sftprep.tools.view import BuildView, token_texts

NOT_OUTPUT_KEYS = ("out", "num_proc", "overwrite")
"""Config keys that never change what a build holds; not reported."""
TOKENIZER_KEYS = (
    "fingerprint",
    "chat_template_sha256",
    "chat_template_source",
    "length",
    "bos_id",
    "eos_id",
    "pad_id",
    "special_tokens",
    "added_tokens",
)
SOURCE_KEYS = (
    "content_sha256",
    "format",
    "example_id_start",
    "rows_read",
    "rows_kept",
    "dropped",
    "truncated",
    "truncated_tokens",
    "split_examples",
    "tokens",
    "loss_tokens",
    "settings",
    "repeat",
    "rows_unselected",
    "examples",
    "loss_share",
    "turns_located_by",
)
SPLIT_KEYS = (
    "examples",
    "rows",
    "tokens",
    "loss_tokens",
    "packing_efficiency",
    "max_length",
    "packing",
)
CONTEXT = 6
"""Tokens of context shown on each side of a differing token."""


def changed(prefix: str, a, b, keys) -> list[str]:
    """`prefix key: a: x → b: y` for each key whose values differ (a missing key shows as —);
    `a` and `b` are both mappings (the config) or both manifest records."""
    lines = []
    for key in keys:
        va, vb = (_value(a, key), _value(b, key))
        if va != vb:
            lines.append(f"  {prefix}{key}: a: {_short(va)} → b: {_short(vb)}")
    return lines


def _value(holder, key: str):
    if isinstance(holder, dict):
        return holder.get(key, "—")
    return getattr(holder, key, "—")


def _short(value) -> str:
    """A sha256 as its first 12 hex digits, a string quoted, anything else as is."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return repr(value) if isinstance(value, str) else str(value)


@dataclass
class Examples:
    """Every example that sits whole in one segment of a build, by id, over all splits."""

    view: BuildView
    where: dict[int, tuple[np.ndarray, np.ndarray, int, int]]
    spread: int
    """Examples cut over several segments (wrapped packing, --overlong split): not compared."""

    def ids(self, example_id: int) -> np.ndarray:
        flat_ids, _, start, length = self.where[example_id]
        return flat_ids[start : start + length]

    def mask(self, example_id: int) -> np.ndarray:
        _, flat_mask, start, length = self.where[example_id]
        return flat_mask[start : start + length]


def index_examples(view: BuildView) -> Examples:
    """Where each example's tokens lie in the memory-mapped shards."""
    where, count = {}, {}
    for split in view.splits:
        for shard_index, shard in enumerate(view.split_info(split).shards):
            if not shard.rows:
                continue
            table = view.table(split, shard_index)
            flat_ids = table.column(INPUT_IDS).chunk(0).values.to_numpy()
            flat_mask = table.column(LOSS_MASK).chunk(0).values.to_numpy()
            lens = table.column(SEQ_LENS).chunk(0).values.to_numpy()
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(lens) else lens
            for example_id, start, length in zip(
                table.column(EXAMPLE_IDS).chunk(0).values.to_numpy().tolist(),
                starts.tolist(),
                lens.tolist(),
            ):
                count[example_id] = count.get(example_id, 0) + 1
                where[example_id] = (flat_ids, flat_mask, start, length)
    spread = [e for e, n in count.items() if n > 1]
    for e in spread:
        del where[e]
    return Examples(view, where, len(spread))


def _tokenizer_or_none(view: BuildView):
    try:
        return view.tokenizer
    except SftprepError:
        return None


def _context(view: BuildView, ids: np.ndarray, position: int) -> str:
    """`…'before' ▶ 'token' (id 7) ◀ 'after'…` around `position` (decoded when the tokenizer loads)."""
    lo, hi = max(0, position - CONTEXT), min(len(ids), position + 1 + CONTEXT)
    window = ids[lo:hi].tolist()
    backend = _tokenizer_or_none(view)
    if backend is None:
        pieces = [str(i) for i in window]
        before, after = " ".join(pieces[: position - lo]), " ".join(pieces[position - lo + 1 :])
        token = pieces[position - lo] if position < len(ids) else "(end)"
        return f"{'…' if lo else ''}[{before}] ▶ {token} ◀ [{after}]{'…' if hi < len(ids) else ''}"
    texts = token_texts(backend, window)
    before, after = "".join(texts[: position - lo]), "".join(texts[position - lo + 1 :])
    token = (
        f"{texts[position - lo]!r} (id {window[position - lo]})"
        if position < len(ids)
        else "(end of example)"
    )
    return f"{'…' if lo else ''}{before!r} ▶ {token} ◀ {after!r}{'…' if hi < len(ids) else ''}"


def _origin(a: BuildView, b: BuildView, example_id: int) -> str:
    """`data.jsonl row 3`, or each build's file and row when they differ."""
    where_a, where_b = ("{} row {}".format(*view.source_of(example_id)) for view in (a, b))
    return where_a if where_a == where_b else f"a: {where_a}, b: {where_b}"


def token_lines(a: Examples, b: Examples, limit: int) -> list[str]:
    """Counts of examples whose ids or loss mask differ, and the first `limit` of them in detail."""
    common = sorted(set(a.where) & set(b.where))
    id_diffs, mask_diffs, lines = 0, 0, []
    for example_id in common:
        ids_a, ids_b = a.ids(example_id), b.ids(example_id)
        same_ids = len(ids_a) == len(ids_b) and np.array_equal(ids_a, ids_b)
        if same_ids and np.array_equal(a.mask(example_id), b.mask(example_id)):
            continue
        id_diffs += not same_ids
        mask_diffs += same_ids
        if id_diffs + mask_diffs > limit:
            continue
        head = f"  example {example_id} — {_origin(a.view, b.view, example_id)}: "
        if not same_ids:
            n = min(len(ids_a), len(ids_b))
            position = (
                int(np.flatnonzero(ids_a[:n] != ids_b[:n])[0])
                if (ids_a[:n] != ids_b[:n]).any()
                else n
            )
            lines += [
                head
                + f"{len(ids_a)} → {len(ids_b)} tokens; first different token at position {position}",
                f"    a: {_context(a.view, ids_a, position)}",
                f"    b: {_context(b.view, ids_b, position)}",
            ]
        else:
            mask_a, mask_b = a.mask(example_id), b.mask(example_id)
            position = int(np.flatnonzero(mask_a != mask_b)[0])
            verdict = "a trains it, b does not" if mask_a[position] else "b trains it, a does not"
            lines += [
                head
                + f"same {len(ids_a)} tokens; loss mask first differs at position {position} ({verdict}; "
                f"trained tokens a: {int(mask_a.sum())} → b: {int(mask_b.sum())})",
                f"    {_context(a.view, ids_a, position)}",
            ]
    only_a, only_b = len(set(a.where) - set(b.where)), len(set(b.where) - set(a.where))
    if not (id_diffs or mask_diffs or only_a or only_b):
        return []
    summary = (
        f"  {len(common):,} examples in both: {id_diffs:,} differ in tokens, {mask_diffs:,} only in the loss mask; "
        f"{only_a:,} only in a, {only_b:,} only in b"
    )
    spread = (
        f" ({a.spread:,} in a and {b.spread:,} in b span several segments and are not compared)"
        if a.spread or b.spread
        else ""
    )
    return [summary + spread] + lines


def diff_builds(dir_a: str, dir_b: str, examples: int = 3) -> list[str]:
    """The lines `sftprep diff` prints: `identical: ...`, or every difference found."""
    a, b = BuildView(dir_a), BuildView(dir_b)
    ma, mb = a.manifest, b.manifest
    if ma.fingerprint == mb.fingerprint:
        damaged = [
            f"  {side} {view.dir}: {problem}"
            for side, view in (("a", a), ("b", b))
            for problem in shard_problems(view.dir, view.manifest, sha256=True)
        ]
        if damaged:
            return [
                f"differ: same fingerprint {ma.fingerprint[:12]}, but shards do not match their manifest (run `sftprep verify`):"
            ] + damaged
        return [
            f"identical: both builds have fingerprint {ma.fingerprint[:12]} (same config, sources, tokenizer and sftprep version)"
        ]
    keys = sorted((set(ma.config) | set(mb.config)) - set(NOT_OUTPUT_KEYS))
    sections = {
        "build": changed("", ma, mb, ("format_version", "sftprep_version")),
        "config": changed("", ma.config, mb.config, keys),
        "tokenizer": changed("", ma.tokenizer, mb.tokenizer, TOKENIZER_KEYS),
        "sources": _source_lines(ma.sources, mb.sources),
        "splits": _split_lines(ma.splits, mb.splits),
        "tokens": token_lines(index_examples(a), index_examples(b), examples),
    }
    lines = [
        f"differ: a {a.dir} (fingerprint {ma.fingerprint[:12]}) vs b {b.dir} (fingerprint {mb.fingerprint[:12]})"
    ]
    for name, found in sections.items():
        if found:
            lines += [f"{name}:"] + found
    if len(lines) == 1:
        lines.append(
            "  no difference in config, tokenizer, sources, splits or tokens beyond the fingerprint"
        )
    return lines


def _source_lines(sa: tuple[SourceEntry, ...], sb: tuple[SourceEntry, ...]) -> list[str]:
    """Sources matched by position (the order that assigns example ids), so a moved file still pairs up."""
    lines = []
    for i in range(max(len(sa), len(sb))):
        if i >= len(sb) or i >= len(sa):
            s, side = (sa[i], "a") if i < len(sa) else (sb[i], "b")
            lines.append(f"  source {i} {s.path} ({s.split}): only in {side}")
        else:
            lines += changed(
                f"source {i} {sa[i].path} ({sa[i].split}) ",
                sa[i],
                sb[i],
                ("path", "split") + SOURCE_KEYS,
            )
    return lines


def _split_lines(sa: dict[str, SplitEntry], sb: dict[str, SplitEntry]) -> list[str]:
    lines = []
    for split in dict.fromkeys(list(sa) + list(sb)):
        if split not in sb or split not in sa:
            lines.append(f"  {split}: only in {'a' if split in sa else 'b'}")
        else:
            lines += changed(f"{split} ", sa[split], sb[split], SPLIT_KEYS)
    return lines
