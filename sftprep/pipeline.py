"""The build, top to bottom: sources -> detect -> normalize/render/encode -> length policy ->
split -> pack -> write. Reads like the diagram in DESIGN.md; each stage lives in its own module."""

import hashlib
import itertools
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from schemas import FORMAT_VERSION
from schemas.manifest import Manifest, ManifestError, SourceEntry, read_manifest, write_manifest
from sftprep.config import BuildConfig, load_config
from sftprep.encoding import Encoded
from sftprep.errors import RowError, SftprepError
from sftprep.example_stage import ExampleStage, has_loss, init_worker, process_in_worker
from sftprep.formats import detect_format
from sftprep.length_policy import apply_length_policy
from sftprep.parallel import chunked, in_worker_processes, pipelined, worker_processes
from sftprep.row_assembly import assemble_rows, plan_rows, split_positions, split_stats
from sftprep.sources import Source, content_sha256, iter_rows, resolve_sources
from sftprep.spill import Spill
from sftprep.tokenizer_loader import LoadedTokenizer, load_tokenizer
from sftprep.version import __version__
from sftprep.writer import atomic_build_dir, write_split

CHUNK_ROWS = 1024
POOL_MIN_CHUNKS = (
    5  # worker processes only for a source of at least this many chunks (about 3k rows)
)
SPILL_DIR = ".spill"
FINGERPRINT_EXCLUDED = (
    "out",
    "overwrite",
    "num_proc",
    "sources",
    "eval_sources",
    "tokenizer",
    "chat_template",
)


@dataclass
class SourceStats:
    """Counts for one source, as the manifest records them."""

    source: Source
    split: str
    sha256: str
    example_id_start: int
    format: str = ""
    rows_read: int = 0
    rows_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    tokens: int = 0
    loss_tokens: int = 0
    truncated: int = 0
    truncated_tokens: int = 0
    split_examples: int = 0

    def entry(self) -> SourceEntry:
        """This source's record in the manifest."""
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
        )


@dataclass
class BuildResult:
    """What a build returns: its manifest, and whether an identical build was already there."""

    manifest: Manifest
    up_to_date: bool


def build(config, progress: Callable[[int, int], None] | None = None) -> dict:
    """Run a build from a BuildConfig, a dict of config keys, or a YAML path; return its manifest."""
    return run_build(as_config(config), progress).manifest.to_json()


def as_config(config) -> BuildConfig:
    """Accept a BuildConfig, a mapping of config keys, or the path of a YAML file."""
    if isinstance(config, BuildConfig):
        return config.validate()
    if isinstance(config, (str, Path)):
        return load_config(str(config), {})
    if isinstance(config, dict):
        return load_config(None, config)
    raise SftprepError(
        f"build() takes a BuildConfig, a dict or a YAML path, not {type(config).__name__}"
    )


def run_build(
    config: BuildConfig, progress: Callable[[int, int], None] | None = None
) -> BuildResult:
    """The whole build; see the module docstring for the order of stages."""
    started = time.perf_counter()
    train_sources = resolve_sources(config.sources)
    eval_sources = resolve_sources(config.eval_sources, "--eval") if config.eval_sources else []
    tokenizer = load_tokenizer(
        config.tokenizer, config.chat_template, config.pad_vocab_to_multiple_of
    )
    stats, start = [], 0
    eval_split = "train+eval" if config.eval_fraction else "train"
    for split, sources in ((eval_split, train_sources), ("eval", eval_sources)):
        for source in sources:
            stats.append(SourceStats(source, split, content_sha256(source), 0))
    fingerprint = build_fingerprint(config, stats, tokenizer)
    out = Path(config.out)
    existing = _existing_manifest(out)
    if existing is not None and existing.fingerprint == fingerprint:
        return BuildResult(existing, True)
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        what = "a different build" if existing else "files that are not a complete build"
        raise SftprepError(
            f"--out {out} already holds {what}; pass --overwrite to replace it, or choose another --out"
        )

    with atomic_build_dir(out) as tmp:
        spills = {"train": Spill(tmp / SPILL_DIR, "train"), "eval": Spill(tmp / SPILL_DIR, "eval")}
        try:
            for st in stats:
                st.example_id_start = start
                _read_source(config, tokenizer, st, spills, progress)
                start += st.rows_read
            splits = {}
            for split, (spill, positions) in split_positions(spills, stats, config).items():
                plan = plan_rows(spill, positions, config)
                shards = write_split(
                    tmp, split, assemble_rows(spill, plan), config.shard_size_mb * 1024 * 1024
                )
                splits[split] = split_stats(spill, positions, plan, shards, config)
        finally:
            for spill in spills.values():
                spill.close()
            shutil.rmtree(tmp / SPILL_DIR, ignore_errors=True)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            sftprep_version=__version__,
            fingerprint=fingerprint,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            elapsed_s=round(time.perf_counter() - started, 3),
            config=config.to_dict(),
            tokenizer=tokenizer.manifest_entry(),
            sources=tuple(st.entry() for st in stats),
            splits=splits,
            dropped=dict(sorted(sum((st.dropped for st in stats), Counter()).items())),
        )
        write_manifest(tmp, manifest)
    return BuildResult(manifest, False)


def build_fingerprint(
    config: BuildConfig, stats: list[SourceStats], tokenizer: LoadedTokenizer
) -> str:
    """Hash of everything that decides the output: config, source contents, tokenizer, template, version."""
    settings = {k: v for k, v in config.to_dict().items() if k not in FINGERPRINT_EXCLUDED}
    payload = {
        "format_version": FORMAT_VERSION,
        "sftprep_version": __version__,
        "config": settings,
        "sources": [[st.split, st.source.kind, st.sha256] for st in stats],
        "tokenizer": tokenizer.fingerprint,
        "special_tokens": tokenizer.special_tokens,
        "chat_template": tokenizer.chat_template,
        "added_tokens": tokenizer.added_tokens,
    }
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


def _existing_manifest(out: Path) -> Manifest | None:
    """The build already in `out`, if it is a readable one."""
    try:
        return read_manifest(out)
    except ManifestError:
        return None


def _read_source(config, tokenizer, st: SourceStats, spills: dict, progress) -> None:
    """Encode every row of one source; keep examples under the length policy; count every drop."""
    rows = iter_rows(st.source)
    head = []
    for row in rows:  # detect the format from the first row that parses
        head.append(row)
        if isinstance(row, dict):
            break
    if not head:
        raise SftprepError(
            f"{st.source.path}: no rows; remove it from the sources or put data in it"
        )
    rows = itertools.chain(head, rows)
    columns = list(head[-1]) if isinstance(head[-1], dict) else []
    spec = detect_format(columns, config, st.source.path)
    st.format = spec.name
    tasks = ((spec, chunk) for chunk in chunked(rows, CHUNK_ROWS))
    batches = _map(config, tokenizer, tasks, st.source.path)
    try:
        _consume(config, st, batches, spills, progress)
    finally:
        batches.close()  # stops the worker pool at once, also when a bad row raised


def _consume(config, st: SourceStats, batches, spills: dict, progress) -> None:
    for results in batches:
        for row_index, result in results:
            st.rows_read += 1
            if isinstance(result, RowError):
                if config.on_error == "raise":
                    raise result.located(st.source.path, row_index)
                st.dropped[result.reason] += 1
                continue
            _keep(config, st, st.example_id_start + row_index, result, spills)
        if progress:
            progress(
                len(results), sum(len(e.input_ids) for _, e in results if isinstance(e, Encoded))
            )


def _map(config: BuildConfig, tokenizer: LoadedTokenizer, tasks, source: str):
    """Encode (spec, chunk) tasks in order: in worker processes when there are enough cores and
    at least POOL_MIN_CHUNKS chunks (starting workers costs more than a small source takes)."""
    procs = worker_processes(config.num_proc, os.cpu_count() or 1)
    head = list(itertools.islice(tasks, POOL_MIN_CHUNKS))
    tasks = itertools.chain(head, tasks)
    if procs <= 1 or len(head) < POOL_MIN_CHUNKS:
        stage = ExampleStage(config, tokenizer)
        return pipelined(stage.render, stage.tokenize, stage.finish, tasks)
    return in_worker_processes(process_in_worker, tasks, procs, init_worker, (config,), source)


def _keep(
    config: BuildConfig, st: SourceStats, example_id: int, encoded: Encoded, spills: dict
) -> None:
    if not has_loss(encoded):
        st.dropped["no_loss_tokens"] += 1
        return
    kept, cut = (
        ([encoded], 0)
        if config.packing == "wrapped"
        else apply_length_policy(
            encoded, config.max_length, config.overlong, config.truncation_side
        )
    )
    if not kept:
        st.dropped["too_long"] += 1
        return
    if not any(has_loss(p) for p in kept):
        st.dropped["no_loss_tokens"] += 1  # e.g. truncation cut off the whole answer
        return
    if cut:
        st.truncated += 1
        st.truncated_tokens += cut
    if len(kept) > 1:
        st.split_examples += 1
    st.rows_kept += 1
    spill = spills["eval" if st.split == "eval" else "train"]
    for piece in kept:
        st.tokens += len(piece.input_ids)
        st.loss_tokens += piece.loss_tokens
        spill.add(example_id, piece)
