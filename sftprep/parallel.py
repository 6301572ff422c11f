"""How chunks of rows are processed: in this process with a tokenizer thread beside it, or in worker
processes. Either way results come back in chunk order, so the output is byte-identical for any
worker count; a worker that dies stops the build with one line, never a hang."""

import itertools
import multiprocessing
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from sftprep.errors import SftprepError

IN_PROCESS_UP_TO_CORES = 4
WORKERS_FROM_BYTES = 64 << 20  # a source this big gets worker processes on any core count
WORKERS_FROM_ROWS = 16_000  # and one of this many rows (see worker_processes)
IN_FLIGHT_PER_WORKER = 2  # chunks queued per worker: enough to keep it busy, bounded memory
RENDER_AHEAD = 8  # chunks rendered ahead of the tokenizer thread at most (see pipelined)


def chunked(rows: Iterable, size: int, keep: Callable[[int], bool] | None = None) -> Iterator[list]:
    """(row_index, row) chunks of `size` rows; the first ones smaller (size/8, /4, /2), so that the
    tokenizer thread starts after a few rows are rendered rather than a whole chunk. With `keep`,
    only the rows whose index it accepts (a mixture's fraction), with their own indices."""
    iterator = iter(enumerate(rows))
    if keep is not None:
        iterator = ((i, row) for i, row in iterator if keep(i))
    step = max(1, size // 8)
    while chunk := list(itertools.islice(iterator, step)):
        yield chunk
        step = min(size, step * 2)


def worker_processes(
    num_proc: int, cores: int, source_bytes: int = 0, source_rows: Callable[[], int] = lambda: 0
) -> int:
    """Worker processes for a source under --num-proc (0 = choose): 1 means in this process, pipelined.

    In one process the Rust tokenizer runs in a thread beside Python (rendering, masks), and the
    fast encoder loads while the first chunks render, so on up to IN_PROCESS_UP_TO_CORES cores one
    process wins for a small source. What makes a source big is mostly its rows (sftprep's Python
    is per row), then its bytes. Measured on 2 cores (bench/RESULTS.md, session 19), workers
    reading their own chunks of the file, one process vs 2 workers: 10k Alpaca rows (3 MB) 3.8-4.1
    vs 4.2-4.3 s; 7k chats (20 MB) 3.5-3.7 s both; 14k chats (41 MB) 3.9-4.5 vs 4.3-5.3 s; 20k
    Alpaca rows (7 MB) 5.3-6.1 vs 4.7-5.5 s (Qwen3), 3.9-4.0 vs 3.5-3.7 s (SmolLM2); 28k chats
    (81 MB) 7.5-7.7 vs 5.9-6.9 s. So a source of WORKERS_FROM_ROWS rows or WORKERS_FROM_BYTES
    bytes gets one worker per core; beyond IN_PROCESS_UP_TO_CORES cores every source does.
    `source_rows` is asked only when the bytes do not decide (counting costs a pass over a JSONL).
    """
    if num_proc:
        return num_proc
    if cores > IN_PROCESS_UP_TO_CORES:
        return cores
    if cores > 1 and (source_bytes >= WORKERS_FROM_BYTES or source_rows() >= WORKERS_FROM_ROWS):
        return cores
    return 1


def in_worker_processes(
    function: Callable,
    tasks: Iterable,
    procs: int,
    initializer: Callable,
    initargs: tuple,
    what: str,
    start_method: str = "spawn",
) -> Iterator:
    """`function(task)` for each task in `procs` worker processes, yielded in task order.

    Spawned unless the caller knows a fork is safe (`start_method` "fork"): a fork after a Rust
    tokenizer has started its threads can deadlock, so the build forks only before fastokens
    has encoded anything (see pipeline._worker_start).
    `concurrent.futures` rather than `multiprocessing.Pool`: when a worker dies (killed, out of
    memory, or a result that cannot be unpickled), Pool.imap waits forever for the lost task,
    while a ProcessPoolExecutor marks every pending future broken. At most
    IN_FLIGHT_PER_WORKER tasks per worker are queued, so a big source is never read ahead whole.
    """
    context = multiprocessing.get_context(start_method)
    pool = ProcessPoolExecutor(
        procs,
        mp_context=context,
        initializer=initializer,
        initargs=initargs,
    )
    pending: deque = deque()
    try:
        for task in tasks:
            with signals_held():  # the first submit starts (forks) the workers
                pending.append(pool.submit(function, task))
            if len(pending) >= procs * IN_FLIGHT_PER_WORKER:
                yield _result(pending.popleft(), what)
        while pending:
            yield _result(pending.popleft(), what)
    finally:
        pool.shutdown(
            wait=True, cancel_futures=True
        )  # also when the consumer stopped early or raised


HELD_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextmanager
def signals_held():
    """Ctrl-C, SIGTERM and SIGHUP held back (noted, not lost) while workers are started, then
    delivered to the handlers they had. One arriving during a fork would be raised inside an
    at-fork handler (logging's), where Python prints it as an ignored exception and drops it, so
    the build would go on. Python handlers, not a blocked signal mask: the build's other threads
    (pyarrow's, the tokenizers') would take a blocked signal instead. Main thread only (elsewhere
    Python runs no signal handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: noted.append(signum)) for sig in HELD_SIGNALS
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if noted:
            signal.raise_signal(noted[0])


def _result(future, what: str):
    try:
        return future.result()
    except BrokenProcessPool:
        raise SftprepError(
            f"{what}: a worker process died (killed, or out of memory) and the build stopped; "
            "rerun with --num-proc 1 to build in one process, or give the machine more memory"
        ) from None


def pipelined(render: Callable, tokenize: Callable, finish: Callable, tasks: Iterable) -> Iterator:
    """In one process, three steps overlap: while a thread tokenizes in Rust (GIL released, on all
    cores), this thread renders the next chunks and turns finished chunks' Encodings into ids and
    masks, in chunk order. Rendering runs up to RENDER_AHEAD chunks ahead of the tokenizer: while
    the fast encoder loads (about 2 s for a 150k vocabulary, in the tokenizer thread) the build
    keeps rendering instead of waiting; a finished chunk is taken as soon as it is ready.
    The thread never runs Python, so it never waits for the GIL while the tokenizer could work."""
    tokenizer = ThreadPoolExecutor(max_workers=1)
    pending: deque = deque()  # (prepared chunk, future of its Encodings), in chunk order
    try:
        for task in tasks:
            prepared = render(*task)
            pending.append((prepared, tokenizer.submit(tokenize, prepared)))
            while pending and (pending[0][1].done() or len(pending) > RENDER_AHEAD):
                prepared, future = pending.popleft()
                yield finish(prepared, future.result())
        while pending:
            prepared, future = pending.popleft()
            yield finish(prepared, future.result())
    finally:  # also when the consumer stopped early or raised: queued chunks are not tokenized
        tokenizer.shutdown(wait=True, cancel_futures=True)
