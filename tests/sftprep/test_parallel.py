"""Errors cross process boundaries intact; chunking and the ordered pool keep order."""

import pickle
import signal
import subprocess
import sys

import pytest

from sftprep.errors import RowError, SftprepError
from sftprep.parallel import HELD_SIGNALS, chunked, in_worker_processes


def test_errors_survive_a_pickle_round_trip():
    err = RowError("unknown_role", "message 0 has role 'narrator'").located("d.jsonl", 3500)
    back = pickle.loads(pickle.dumps(err))
    assert (
        type(back) is RowError
        and str(back)
        == str(err)
        == "d.jsonl, row 3500: message 0 has role 'narrator' [unknown_role]"
    )
    assert (back.reason, back.detail, back.source, back.row) == (
        "unknown_role",
        "message 0 has role 'narrator'",
        "d.jsonl",
        3500,
    )
    unlocated = pickle.loads(pickle.dumps(RowError("malformed_json", "line 3 is not valid JSON")))
    assert unlocated.located("f", 2).row == 2 and unlocated.source == ""
    plain = pickle.loads(pickle.dumps(SftprepError("bad config")))
    assert type(plain) is SftprepError and str(plain) == "bad config"


def test_chunks_grow_then_hold_and_keep_every_row_in_order():
    chunks = list(chunked(range(50), 16))
    assert [len(c) for c in chunks] == [2, 4, 8, 16, 16, 4]
    assert [i for c in chunks for i, _ in c] == list(range(50)) == [r for c in chunks for _, r in c]


def _square(x: int) -> int:
    return x * x


def _noop() -> None:
    pass


def test_worker_results_come_back_in_task_order_with_the_signal_handlers_given_back():
    before = {sig: signal.getsignal(sig) for sig in HELD_SIGNALS}
    assert list(in_worker_processes(_square, range(40), 2, _noop, (), "t")) == [
        x * x for x in range(40)
    ]
    assert {sig: signal.getsignal(sig) for sig in HELD_SIGNALS} == before


@pytest.mark.parametrize("imports", ["", "import pyarrow, numpy; "])
def test_a_ctrl_c_while_workers_start_is_held_then_raised_not_lost(imports):
    """A Ctrl-C during a fork would be raised in an at-fork handler and dropped; held, it comes
    right after, as a KeyboardInterrupt in the code that started the workers (also with other
    threads in the process, which would take a signal merely blocked in this one)."""
    code = (
        f"import os, signal, time; {imports}\n"
        "from sftprep.parallel import signals_held\n"
        "try:\n"
        "    with signals_held():\n"
        "        os.kill(os.getpid(), signal.SIGINT); time.sleep(0.2); print('held', flush=True)\n"
        "    time.sleep(5); print('lost')\n"
        "except KeyboardInterrupt:\n"
        "    print('raised')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "held\nraised\n", (done.stdout, done.stderr)


def test_pipelined_renders_ahead_of_a_slow_tokenizer_and_keeps_chunk_order():
    """While the tokenizer thread is held (the fast encoder loading), rendering goes on up to
    RENDER_AHEAD chunks ahead, no further; results come back in chunk order, each chunk once."""
    import threading

    from sftprep.parallel import RENDER_AHEAD, pipelined

    loaded = threading.Event()
    rendered = []

    def render(i):
        rendered.append(i)
        return i

    def tokenize(i):
        loaded.wait(10)
        return -i

    tasks = ((i,) for i in range(40))
    results = pipelined(render, tokenize, lambda p, t: (p, t), tasks)
    first = []
    waiter = threading.Thread(target=lambda: first.append(next(results)))
    waiter.start()
    waiter.join(1.0)
    assert not first and len(rendered) == RENDER_AHEAD + 1  # ahead, and bounded
    loaded.set()
    waiter.join(10)
    assert first + list(results) == [(i, -i) for i in range(40)]


def test_pipelined_stopped_early_does_not_tokenize_the_queued_chunks():
    import time

    from sftprep.parallel import pipelined

    tokenized = []

    def tokenize(i):
        time.sleep(0.05)
        tokenized.append(i)

    results = pipelined(lambda i: i, tokenize, lambda p, t: p, ((i,) for i in range(40)))
    assert next(results) == 0  # by then RENDER_AHEAD chunks wait behind chunk 0
    results.close()
    assert len(tokenized) <= 2, "the queued chunks were cancelled, not tokenized"
