"""The build, top to bottom: sources -> detect -> normalize/render/encode -> length policy ->
split -> pack -> write. Reads like the diagram in DESIGN.md; each stage lives in its own module
under sftprep/stages/; sftprep/parallel.py (--engine local) or sftprep/ray_engine.py (--engine
ray) decides where chunks of rows are encoded, and either gives them back in order."""

import dataclasses
import itertools
import operator
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np

from schemas import FORMAT_VERSION
from schemas.contract import MANIFEST_NAME
from schemas.manifest import (
    Manifest,
    ManifestError,
    read_manifest,
    shard_problems,
    write_manifest,
)
from sftprep.config import BuildConfig, load_config
from sftprep.errors import RowError, SftprepError
from sftprep.parallel import chunked, in_worker_processes, pipelined, worker_processes
from sftprep.source_settings import fraction_filter, mixture, source_config
from sftprep.stages.chat_template import reads_date
from sftprep.stages.fast_encoder import choose_encoder
from sftprep.stages.fast_preparse import finish_parses, start_parse
from sftprep.stages.fast_render import require_renderer
from sftprep.stages.fingerprint import build_fingerprint
from sftprep.stages.formats import detect_format
from sftprep.stages.length_policy import admit
from sftprep.stages.masks import Encoded
from sftprep.stages.mixture import choose_examples
from sftprep.stages.out_guard import build_lock, refuse_foreign_files, refuse_unsafe_out
from sftprep.stages.pack import plan_rows
from sftprep.stages.packed_results import PackedResults, kept_whole
from sftprep.stages.row_encoder import (
    encoder_for,
    init_forked_worker,
    init_worker,
    process_file_chunk_in_worker,
    process_in_worker,
)
from sftprep.stages.shards import atomic_build_dir, recover_interrupted, write_split
from sftprep.stages.source_chunks import (
    SPLITTABLE,
    chunk_target,
    count_rows,
    in_file_order,
    plan_chunks,
)
from sftprep.stages.source_stats import KeptRows, SourceStats
from sftprep.stages.sources import (
    content_sha256,
    iter_rows,
    require_unchanged,
    resolve_sources,
    same_sources,
    source_stamp,
)
from sftprep.stages.spill import Spill, assemble_rows
from sftprep.stages.split import split_positions, split_stats
from sftprep.stages.tokenizer import LoadedTokenizer, load_tokenizer
from sftprep.version import __version__

CHUNK_ROWS = 1024
POOL_MIN_CHUNKS = (
    5  # worker processes only for a source of at least this many chunks (about 3k rows)
)
WORKER_CHUNK_BYTES = (1 << 20, 4 << 20)
"""Smallest and largest chunk of a JSONL, Parquet or Arrow file that a worker reads itself: the
build process then neither parses nor pickles rows (measured at 70k chats, 203 MB, 2 workers:
JSON parsing 3.1 s and feeding rows to the workers 2.3 s of the build process's time). A file
under POOL_MIN_CHUNKS smallest chunks goes the way rows do: workers only from about 3k rows."""
SPILL_DIR = ".spill"


@dataclass
class BuildResult:
    """What a build returns: its manifest, and whether an identical build was already there."""

    manifest: Manifest
    up_to_date: bool
    repaired: str = ""
    """What was damaged in an identical build already in `out` (it was ours, so it was rebuilt)."""


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


def _dated(config: BuildConfig, tokenizer: LoadedTokenizer) -> BuildConfig:
    """The config with `template_date` settled: today when the template reads the date and none
    was given, None when it reads none (so the date enters the fingerprint only when it matters)."""
    if not reads_date(tokenizer.chat_template):
        return dataclasses.replace(config, template_date=None)
    return dataclasses.replace(
        config, template_date=config.template_date or date.today().isoformat()
    )


def run_build(
    config: BuildConfig, progress: Callable[[int, int], None] | None = None
) -> BuildResult:
    """The whole build; see the module docstring for the order of stages."""
    started = time.perf_counter()
    train_sources = resolve_sources(config.sources)
    eval_sources = resolve_sources(config.eval_sources, "--eval") if config.eval_sources else []
    if both := same_sources(train_sources, eval_sources):
        raise SftprepError(
            f"--eval {', '.join(both)}: also a training source, so the eval split would be training data; "
            "use a held-out file, or --eval-fraction"
        )
    out = Path(config.out)
    refuse_unsafe_out(out, train_sources + eval_sources)  # before hashing gigabytes of sources
    if _parse_early(config, out, train_sources + eval_sources):
        start_parse(config.tokenizer)  # fastokens parses while the HF tokenizer loads
    tokenizer = load_tokenizer(
        config.tokenizer, config.chat_template, config.pad_vocab_to_multiple_of
    )
    config = _dated(config, tokenizer)
    stats = []
    eval_split = "train+eval" if config.eval_fraction else "train"
    for split, sources in ((eval_split, train_sources), ("eval", eval_sources)):
        for source in sources:
            stamp = source_stamp(source)
            stats.append(SourceStats(source, split, content_sha256(source), 0, stamp=stamp))
    fingerprint = build_fingerprint(config.to_dict(), stats, tokenizer)
    with build_lock(out):
        return _build_locked(
            config, tokenizer, stats, fingerprint, bool(eval_sources), started, progress
        )


def _build_locked(
    config, tokenizer, stats, fingerprint, has_eval, started, progress
) -> BuildResult:
    """The build once it holds the lock of `out`: reuse, repair or replace what is there."""
    out = Path(config.out)
    recover_interrupted(out)
    existing = _existing_manifest(out)
    damage = []
    if existing is not None and existing.fingerprint == fingerprint:
        damage = shard_problems(out, existing, sha256=True)
        if not damage:
            return BuildResult(existing, True)
    if out.exists() and any(out.iterdir()):
        if not config.overwrite and not damage:
            what = "a different build" if existing else "files that are not a complete build"
            raise SftprepError(
                f"--out {out} already holds {what}; pass --overwrite to replace it, or choose another --out"
            )
        refuse_foreign_files(out, existing)
    start = 0
    # after the up-to-date check, which never needs the encoder; fastokens loads on first use
    choose_encoder(tokenizer, config.encoder)
    require_renderer(config.renderer, tokenizer.chat_template, config.template_seconds)

    with atomic_build_dir(out) as tmp, _encoding_engine(config, tokenizer) as engine:
        spills = {"train": Spill(tmp / SPILL_DIR, "train"), "eval": Spill(tmp / SPILL_DIR, "eval")}
        try:
            for st in stats:
                st.example_id_start = start
                _read_source(config, tokenizer, engine, st, spills, progress)
                require_unchanged(st.source, st.stamp)
                start += st.rows_read * st.repeat
            choose_examples(spills, stats, config.seed)
            _refuse_empty(spills, stats, has_eval)
            splits = {}
            for split, (spill, positions) in split_positions(spills, stats, config).items():
                lengths = spill.lengths_at(positions)
                plan = plan_rows(lengths, positions, config.packing, config.max_length, config.seed)
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
            engine=config.engine,
            workers=engine.workers if engine else max(st.workers for st in stats),
            config=config.to_dict(),
            tokenizer=tokenizer.manifest_entry(sum((st.encoded_by for st in stats), Counter())),
            sources=_source_entries(stats),
            splits=splits,
            dropped=dict(sorted(sum((st.dropped for st in stats), Counter()).items())),
        )
        write_manifest(tmp, manifest)
    return BuildResult(manifest, False, "; ".join(damage))


def _source_entries(stats: list[SourceStats]) -> tuple:
    """The manifest's sources, each with its share of the loss tokens of its split's sources."""
    totals = Counter()
    for st in stats:
        totals[st.split] += st.loss_tokens
    return tuple(st.entry(totals[st.split]) for st in stats)


def _refuse_empty(spills: dict, stats: list[SourceStats], eval_asked: bool) -> None:
    """A split with no example left fails the build (nothing is written), with the drops by reason."""
    for split in ("train", "eval") if eval_asked else ("train",):
        if not len(spills[split]):
            mine = [st for st in stats if (st.split == "eval") == (split == "eval")]
            dropped = sum((st.dropped for st in mine), Counter())
            counts = (
                ", ".join(f"{n:,} {reason}" for reason, n in sorted(dropped.items())) or "no rows"
            )
            read = sum(st.rows_read for st in mine)
            raise SftprepError(
                f"the {split} split would be empty: all {read:,} rows were dropped ({counts}); "
                "fix the data (see the README's drop reasons) or the options that drop them"
            )


def _existing_manifest(out: Path) -> Manifest | None:
    """The build already in `out`, if it is a readable one."""
    try:
        return read_manifest(out)
    except ManifestError:
        return None


@contextmanager
def _encoding_engine(config: BuildConfig, tokenizer: LoadedTokenizer):
    """None for --engine local; for ray, the encoding actors on the cluster, started after the
    up-to-date check (a rebuild that is a no-op never contacts Ray) and stopped with the build."""
    if config.engine != "ray":
        yield None
        return
    from sftprep.ray_engine import ray_encoders

    with ray_encoders(config, tokenizer) as encoders:
        yield encoders


def _read_source(config, tokenizer, engine, st: SourceStats, spills: dict, progress) -> None:
    """Encode every row of one source; keep examples under the length policy; count every drop."""
    own = source_config(config, st.source.settings)
    mix = mixture(st.source.settings)
    st.repeat = mix.repeat
    st.kept_rows = KeptRows() if mix.chosen_after_encoding else None
    total = itertools.count()
    rows = (row for row in iter_rows(st.source) if next(total) >= 0)  # counts every row read
    head = []
    for row in rows:  # detect the format from the first row that parses
        head.append(row)
        if isinstance(row, dict):
            break
    if not head:
        raise SftprepError(
            f"{st.source.path}: no rows; remove it from the sources or put data in it"
        )
    if not isinstance(head[-1], dict):  # no row of the file is an object: say why, not "no columns"
        first = next(i for i, r in enumerate(head) if isinstance(r, RowError))
        raise SftprepError(
            f"{st.source.path}: no row can be read ({len(head):,} tried); row {first}: "
            f"{head[first].detail} [{head[first].reason}]"
        )
    rows = itertools.chain(head, rows)
    columns = list(head[-1])
    spec = detect_format(columns, own, st.source.path)
    st.format = spec.name
    keep = fraction_filter(mix.fraction, config.seed, st.sha256) if mix.fraction else None
    batches = _encoded_chunks(config, tokenizer, engine, st, spec, rows, keep)
    spill = spills["eval" if st.split == "eval" else "train"]
    first = len(spill)
    reading_stops = None if mix.sample else mix.take
    try:
        taken_all = _count_and_spill(config, st, batches, spill, progress, reading_stops)
    finally:
        batches.close()  # stops the worker pool at once, also when a bad row raised
    st.spill_range = (first, len(spill))
    if keep is not None:
        st.rows_read = next(total)  # every row of the file, those the fraction left out included
    elif reading_stops is not None and not taken_all:
        dropped = ", ".join(f"{n:,} {r}" for r, n in sorted(st.dropped.items()))
        raise SftprepError(
            f"{st.source.path}: take {mix.take:,} asks for more rows than the source has: "
            f"{st.rows_kept:,} of its {st.rows_read:,} rows are usable"
            + (f" ({dropped} dropped)" if dropped else "")
            + "; lower take, or use repeat to upsample"
        )


def _count_and_spill(config, st: SourceStats, batches, spill, progress, take=None) -> bool:
    """Each encoded row through the length policy into its split's spill (`st.repeat` times, ids
    start + row * repeat + copy); every drop counted. With `take`, stop once that many rows are
    kept; return whether they were."""
    for results in batches:
        packed = isinstance(results, PackedResults)
        whole = packed and _spill_packed(config, st, results, spill, take)
        if not whole and _spill_rows(
            config, st, results.unpacked() if packed else results, spill, take
        ):
            return True
        if progress:
            tokens = (
                int(results.lengths.sum())
                if packed
                else sum(len(e.input_ids) for _, e in results if isinstance(e, Encoded))
            )
            progress(len(results), tokens)
    return take is None or st.rows_kept >= take


def _spill_rows(config, st: SourceStats, results: list, spill, take) -> bool:
    """A chunk's (row index, Encoded | RowError) one by one (see _count_and_spill); whether
    `take` rows were kept before its end."""
    wrapped = config.packing == "wrapped"
    for row_index, result in results:
        if take is not None and st.rows_kept >= take:
            return True
        st.rows_read = row_index + 1
        if isinstance(result, RowError):
            if config.on_error == "raise":
                raise result.located(st.source.path, row_index)
            st.dropped[result.reason] += 1
            continue
        st.encoded_by[result.encoded_by] += 1
        st.located_by[result.located_by] += 1
        admitted = admit(
            result, config.max_length, config.overlong, config.truncation_side, wrapped
        )
        if admitted.dropped:
            st.dropped[admitted.dropped.value] += 1
            continue
        if st.kept_rows is not None:
            st.kept_rows.add(row_index, len(spill), len(admitted.pieces), admitted.cut)
        st.count_kept(admitted.pieces, admitted.cut)
        first_id = st.example_id_start + row_index * st.repeat
        for copy in range(st.repeat):
            for piece in admitted.pieces:
                spill.add(first_id + copy, piece)
    return False


def _spill_packed(config, st: SourceStats, packed: PackedResults, spill, take) -> bool:
    """Spill a packed chunk, counted as `_count_and_spill` counts row by row: each run of rows
    the length policy keeps as they are in one go, the rows between (bad, over-long, training
    nothing) one by one, in row order; when that gives the same: one copy of each row, none to
    choose among later, `take` not reached before the chunk's last row (the row-by-row path
    stops at the first row, bad or not, that finds it reached). Whether it did."""
    if (
        st.repeat != 1
        or st.kept_rows is not None
        or (take is not None and st.rows_kept + len(packed) > take)  # bad rows count too
    ):
        return False
    whole = kept_whole(packed, config.max_length, config.packing == "wrapped")
    others = [(int(packed.rows[k]), k) for k in np.flatnonzero(~whole).tolist()]
    done = 0  # encoded rows spilled so far
    for row_index, k in sorted(
        others + [(i, err) for i, err in packed.errors], key=operator.itemgetter(0)
    ):
        stop = int(np.searchsorted(packed.rows, row_index))  # the encoded rows before it
        _spill_run(st, packed.part(done, stop), spill)
        result = k if isinstance(k, RowError) else packed.encoded(k)
        _spill_rows(config, st, [(row_index, result)], spill, None)
        done = stop + (not isinstance(k, RowError))
    _spill_run(st, packed.part(done, len(packed.rows)), spill)
    return True


def _spill_run(st: SourceStats, run: PackedResults, spill) -> None:
    """Rows the length policy keeps as they are, spilled and counted in one go."""
    if not len(run.rows):
        return
    st.rows_read = int(run.rows[-1]) + 1
    st.encoded_by.update(run.encoded_by)
    st.located_by.update(run.located_by)
    st.count_kept_whole(len(run.rows), int(run.lengths.sum()), int(run.loss_tokens.sum()))
    spill.add_packed(st.example_id_start + run.rows, run)


def _encoded_chunks(config, tokenizer, engine, st: SourceStats, spec, rows, keep):
    """Encode a source's rows chunk by chunk, in order: on the Ray actors (`engine`), else in
    worker processes when there are enough cores and at least POOL_MIN_CHUNKS chunks (starting
    workers costs more than a small source takes), else in this process. Workers read their own
    chunks of a JSONL, Parquet or Arrow file (byte ranges, row groups), unless a fraction of it is
    kept; then, and for other kinds, this process reads the rows and sends them. Without a
    fraction, every row read gives one result, so `_count_and_spill` counts the rows read."""
    if engine is not None:
        from sftprep.ray_engine import encoded_chunks

        return encoded_chunks(engine, st.source, st.sha256, spec, rows, keep, CHUNK_ROWS)
    size = _file_bytes(st.source)
    procs = _workers_for(config, st.source)
    if procs > 1 and keep is None and st.source.kind in SPLITTABLE:
        target = chunk_target(size, procs, *WORKER_CHUNK_BYTES)
        chunks = plan_chunks(st.source.path, st.source.kind, st.sha256, target)
        if len(chunks) >= POOL_MIN_CHUNKS:  # each worker reads its own chunks of the file
            tasks = ((spec, chunk) for chunk in chunks)
            return in_file_order(
                _in_workers(config, tokenizer, st, procs, process_file_chunk_in_worker, tasks)
            )
    tasks = ((spec, chunk) for chunk in chunked(rows, CHUNK_ROWS, keep))
    head = list(itertools.islice(tasks, POOL_MIN_CHUNKS))
    tasks = itertools.chain(head, tasks)
    if procs <= 1 or len(head) < POOL_MIN_CHUNKS:
        encoder = encoder_for(tokenizer, config)
        return pipelined(encoder.render, encoder.tokenize, encoder.finish, tasks)
    return _in_workers(config, tokenizer, st, procs, process_in_worker, tasks)


def _in_workers(config, tokenizer, st: SourceStats, procs: int, function, tasks):
    """`function` of each task in `procs` worker processes, forked when that is safe."""
    st.workers = procs
    if _can_fork(tokenizer):
        finish_parses()  # an early parse the build did not use may still be running
        initializer, initargs, method = init_forked_worker, (tokenizer, config), "fork"
    else:
        initializer, initargs = init_worker, (config, tokenizer.encoder == "fastokens")
        method = "spawn"
    return in_worker_processes(
        function, tasks, procs, initializer, initargs, st.source.path, method
    )


def _parse_early(config: BuildConfig, out: Path, sources) -> bool:
    """Whether fastokens may parse the tokenizer while the HF one loads (fast_preparse): this
    build, unless it fails, encodes with the fast encoder if the tokenizer qualifies (--encoder
    auto or fast, the local engine, no manifest in --out that could be reused, no tokens added by
    chatml: with them the file as shipped is not the tokenizer), in this process or in workers forked from it once the backend is built (Linux, see
    _can_fork). Spawned workers load their own, so elsewhere only a build that encodes every
    source in this process parses early."""
    return (
        config.encoder != "hf"
        and config.engine == "local"
        and config.chat_template != "chatml"
        and not (out / MANIFEST_NAME).exists()
        and (sys.platform.startswith("linux") or all(_workers_for(config, s) <= 1 for s in sources))
    )


def _can_fork(tokenizer) -> bool:
    """Whether workers can be forked from this process, inheriting its tokenizer and fast backend
    (built here first, encoding nothing): a spawned worker imports sftprep and loads both again,
    about 3 s of CPU for a 150k vocabulary, most of a small build on 2 cores. Linux only (macOS
    forks are unsafe with its system libraries), and never once fastokens has encoded here (its
    threads would be missing in the child). HF's thread pool, if started, is the tokenizers
    library's to handle at a fork (it turns its parallelism off in the child), and the workers
    turn it off too. The build's other threads (numpy's, pyarrow's allocator, a progress bar)
    are fork-safe or never used by a worker."""
    if not sys.platform.startswith("linux"):
        return False
    return tokenizer.fast is None or tokenizer.fast.ready_to_fork()


def _workers_for(config: BuildConfig, source) -> int:
    """Worker processes for this source (`worker_processes` of its bytes and rows)."""
    rows = lambda: count_rows(source.path, source.kind)  # noqa: E731 - asked only if needed
    return worker_processes(config.num_proc, _cores(), _file_bytes(source), rows)


def _file_bytes(source) -> int:
    """Size of a source file (0 for a folder or a hub dataset: those are encoded in process
    unless --num-proc asks for workers)."""
    return os.path.getsize(source.path) if os.path.isfile(source.path) else 0


def _cores() -> int:
    return os.cpu_count() or 1
