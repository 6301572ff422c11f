"""Errors cross process boundaries intact; chunking and the ordered pool keep order."""

import pickle

from sftprep.errors import RowError, SftprepError
from sftprep.parallel import chunked, in_worker_processes


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


def test_worker_results_come_back_in_task_order():
    assert list(in_worker_processes(_square, range(40), 2, _noop, (), "t")) == [
        x * x for x in range(40)
    ]
