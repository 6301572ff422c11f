"""--engine ray: the build's chunks encoded by actors on a Ray cluster, consumed here in order, so
that everything after encoding (length policy, spill, BFD, the writer) is the local engine's and
the build is byte for byte the same.

Plan here, encode there, write here. For JSON lines, Parquet and Arrow files this process plans
chunk descriptors (stages/source_chunks.py: a byte range starting on a line start with the number
of its first line, or a range of row groups / record batches), never rows; each actor reads its
chunk from the shared filesystem and encodes it with its own RowEncoder (the tokenizer is sent
once through the object store, the template compiled once per actor). An actor returns the
chunk's rows numbered from 0 and how many it read; the rows are renumbered here, chunk after
chunk, so row indices and example ids are the local engine's. Sources without a cheap split (a
JSON array, CSV, save_to_disk folders, hub datasets) and any source with a mixture `fraction`
(its filter is by row index, known only here) are read here as today and their row chunks are
sent through the object store instead.

At most IN_FLIGHT_PER_WORKER chunks per actor are pending, and results are taken in chunk order,
so memory stays bounded. An actor whose process dies is restarted by Ray and its chunks are
retried (the output is unchanged); a chunk that kills its worker MAX_TASK_RETRIES + 1 times stops
the build in one line. Before the first chunk every actor reports its versions, the tokenizer's
fingerprint and the template's sha256; any difference from this machine stops the build.

Ray core actors rather than Ray Data's `map_batches(..., ActorPoolStrategy)`: the version check
needs to ask each actor before any chunk is encoded, one pool serves every source of the build
(Ray Data would start and load a pool per dataset), and rows read here stream to the actors
without the whole source listed up front (`from_items` takes a list). Ray's own readers are not
used either: `read_text` splits on U+2028 inside JSON strings and `read_json` forces one schema.
"""

import dataclasses
import hashlib
import itertools
import json
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sftprep.config import BuildConfig
from sftprep.errors import SftprepError
from sftprep.parallel import chunked
from sftprep.stages.formats import FormatSpec
from sftprep.stages.source_chunks import (
    SPLITTABLE,
    ChunkDescriptor,
    chunk_target,
    in_file_order,
)
from sftprep.stages.sources import Source
from sftprep.stages.tokenizer import LoadedTokenizer

IN_FLIGHT_PER_WORKER = 2
CHUNK_BYTES = (256 << 10, 16 << 20)
"""Smallest and largest chunk; in between, about 4 chunks per worker for a small file."""
MAX_TASK_RETRIES = 3
START_TIMEOUT_S = 300
TEST_HOOKS_ENV = "SFTPREP_RAY_TEST_HOOKS"
"""Tests only: JSON {"versions": {field: value}} makes the actors report other versions,
{"die": {"chunk": k, "marker": path}} makes the first attempt at chunk k exit its process."""


@dataclass
class RayEncoders:
    """The actors of one build, and the tokenizer they load: in the object store, sent once and
    kept referenced here, its reference passed (in a list, so that Ray does not resolve it) with
    every call, so that a restarted actor loads it again without constructor arguments in the
    object store (which Ray warns cannot be restored)."""

    actors: list
    shipped: list

    @property
    def workers(self) -> int:
        return len(self.actors)


def import_ray():
    """Ray, or one line saying how to install it."""
    try:
        import ray
    except ModuleNotFoundError:
        raise SftprepError("--engine ray needs Ray: pip install 'sftprep[ray]'") from None
    return ray


@contextmanager
def ray_encoders(config: BuildConfig, tokenizer: LoadedTokenizer) -> Iterator[RayEncoders]:
    """Start (or join, with --ray-address) Ray and the encoding actors, check that every one
    matches this machine, and stop them when the build ends (Ray too, when the build started it)."""
    ray = import_ray()
    joined = _connect(ray, config.ray_address)
    actors = []
    try:
        workers = _worker_count(ray, config.ray_workers)
        shipped = [ray.put(dataclasses.replace(tokenizer, fast=None))]
        remote = ray.remote(
            num_cpus=1,
            max_restarts=-1,
            max_task_retries=MAX_TASK_RETRIES,
            scheduling_strategy="SPREAD",
        )(ChunkEncoder)
        fast = tokenizer.encoder == "fastokens"
        actors = [remote.remote(config, fast, _hooks()) for _ in range(workers)]
        _require_same(ray, actors, shipped, version_report(tokenizer))
        yield RayEncoders(actors, shipped)
    finally:
        for actor in actors:
            ray.kill(actor)
        if joined:
            ray.shutdown()


def _connect(ray, address: str | None) -> bool:
    """Connect this process to Ray; whether it did so itself (so it also disconnects). A Ray
    already initialized here (a notebook, a test session) is used as it is."""
    if ray.is_initialized():
        return False
    options = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address is None:
            ray.init(address="local", include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        detail = " ".join(str(err).split())[:200]
        raise SftprepError(
            f"--ray-address {address}: cannot connect to a Ray cluster ({detail}); start one with "
            "`ray start --head` (then --ray-address auto), or leave --ray-address out to start Ray here"
        ) from None
    return True


def _worker_count(ray, asked: int) -> int:
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if asked > cpus:
        raise SftprepError(
            f"--ray-workers {asked}: the Ray cluster has {cpus} CPUs and each worker takes one; "
            "lower --ray-workers (0: one per CPU) or add nodes"
        )
    return asked or max(1, cpus)


def _hooks() -> dict:
    return json.loads(os.environ.get(TEST_HOOKS_ENV, "{}"))


def version_report(tokenizer: LoadedTokenizer, hooks: dict | None = None) -> dict:
    """What must be the same on every node for the ids to be: library versions, the tokenizer's
    fingerprint as computed there, the chat template's sha256."""
    import jinja2
    import pyarrow
    import tokenizers

    from schemas import tokenizer_fingerprint
    from sftprep.version import __version__

    template = tokenizer.chat_template or ""
    report = {
        "sftprep": __version__,
        "tokenizers": tokenizers.__version__,
        "jinja2": jinja2.__version__,
        "pyarrow": pyarrow.__version__,
        "tokenizer fingerprint": tokenizer_fingerprint(tokenizer.backend),
        "chat template sha256": hashlib.sha256(template.encode()).hexdigest(),
    }
    return {**report, **(hooks or {}).get("versions", {})}


def _require_same(ray, actors: list, shipped: list, mine: dict) -> None:
    """Every actor's report equals this machine's; else one line naming the node and the fields."""
    try:
        asked = [actor.report.remote(shipped) for actor in actors]
        reports = ray.get(asked, timeout=START_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise SftprepError(
            f"--engine ray: {len(actors)} workers did not start within {START_TIMEOUT_S} s "
            "(is the cluster busy?); lower --ray-workers or free the cluster's CPUs"
        ) from None
    for node, theirs in reports:
        differ = [key for key in mine if theirs.get(key) != mine[key]]
        if differ:
            has = " and ".join(f"{key} {theirs.get(key)}" for key in differ)
            here = " and ".join(str(mine[key]) for key in differ)
            raise SftprepError(
                f"--engine ray: node {node} has {has}, this machine {here}; "
                "install the same versions on every node"
            )


class ChunkEncoder:
    """The Ray actor (Ray needs a class): one RowEncoder for the whole build, as init_worker
    makes one per worker process."""

    def __init__(self, config: BuildConfig, fast: bool, hooks: dict):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the actors are the parallelism
        self.config, self.fast, self.hooks = config, fast, hooks
        self.encoder = None

    def _loaded(self, shipped: list):
        """The RowEncoder, made on the first call (again after a restart)."""
        if self.encoder is None:
            import ray

            from sftprep.stages.fast_encoder import choose_encoder
            from sftprep.stages.row_encoder import encoder_for

            tokenizer = ray.get(shipped[0])
            choose_encoder(tokenizer, "auto" if self.fast else "hf")
            self.encoder = encoder_for(tokenizer, self.config)
        return self.encoder

    def report(self, shipped: list) -> tuple[str, dict]:
        import ray

        tokenizer = self._loaded(shipped).tokenizer
        return ray.util.get_node_ip_address(), version_report(tokenizer, self.hooks)

    def encode_chunk(self, shipped: list, spec: FormatSpec, chunk: ChunkDescriptor):
        """(rows read, [(row within the chunk, Encoded | RowError)]), or the SftprepError of a
        file that cannot be read (returned: it is the build's to raise, not Ray's to retry)."""
        from sftprep.stages.row_encoder import encode_file_chunk

        encoder = self._loaded(shipped)
        self._maybe_die(chunk.chunk_id)
        return encode_file_chunk(encoder, spec, chunk)

    def encode_rows(self, shipped: list, spec: FormatSpec, chunk: list):
        """RowEncoder.process_packed of rows read by the build process (numbered there)."""
        return self._loaded(shipped).process_packed(spec, chunk)

    def _maybe_die(self, chunk_id: int) -> None:
        die = self.hooks.get("die")
        if die and die["chunk"] == chunk_id and not Path(die["marker"]).exists():
            Path(die["marker"]).touch()
            os._exit(1)


def encoded_chunks(
    encoders: RayEncoders,
    source: Source,
    content_sha256: str,
    spec: FormatSpec,
    rows: Iterable,
    keep,
    chunk_size: int,
) -> Iterator:
    """Each chunk's packed results (PackedResults: its (row index, Encoded | RowError) pairs),
    chunk after chunk, as the local engine yields them."""
    if source.kind in SPLITTABLE and keep is None:
        from sftprep.stages.source_chunks import plan_chunks

        size = os.path.getsize(source.path)
        target = chunk_target(size, encoders.workers, *CHUNK_BYTES)
        chunks = plan_chunks(source.path, source.kind, content_sha256, target)
        yield from in_file_order(_in_order(encoders, "encode_chunk", ((spec, c) for c in chunks)))
        return
    tasks = ((spec, chunk) for chunk in chunked(rows, chunk_size, keep))
    yield from _in_order(encoders, "encode_rows", tasks)


def _in_order(encoders: RayEncoders, method: str, tasks: Iterable) -> Iterator:
    """Each task sent to the next actor in turn, its reply yielded in task order; at most
    IN_FLIGHT_PER_WORKER tasks per actor pending."""
    import ray

    pending: deque = deque()
    actors = itertools.cycle(encoders.actors)
    try:
        for task in tasks:
            pending.append(getattr(next(actors), method).remote(encoders.shipped, *task))
            if len(pending) >= encoders.workers * IN_FLIGHT_PER_WORKER:
                yield _reply(ray, pending.popleft())
        while pending:
            yield _reply(ray, pending.popleft())
    finally:  # stopped early (a take reached, a bad row): the queued chunks cancelled, the running finished
        for ref in pending:
            ray.cancel(ref)
        ray.wait(list(pending), num_returns=len(pending), timeout=START_TIMEOUT_S)


def _reply(ray, ref):
    try:
        reply = ray.get(ref)
    except ray.exceptions.RayActorError as err:
        raise SftprepError(
            f"--engine ray: a worker died {MAX_TASK_RETRIES + 1} times on one chunk (killed, or "
            f"out of memory: {type(err).__name__}); give the nodes more memory, or lower --max-text-mb"
        ) from None
    if isinstance(reply, SftprepError):
        raise reply
    return reply
