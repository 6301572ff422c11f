"""Packed chunk results (packed_results.py): they unpack to what was packed, and a build process
that spills a packed chunk whole counts and spills exactly what it would row by row."""

import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from sftprep import pipeline
from sftprep.drop_reasons import DropReason
from sftprep.errors import RowError
from sftprep.pipeline import _count_and_spill
from sftprep.stages.masks import Encoded
from sftprep.stages.packed_results import kept_whole, pack_results
from sftprep.stages.source_stats import KeptRows, SourceStats
from sftprep.stages.spill import Spill


def _results(rng, rows: int, bad_every: int = 0, no_loss_every: int = 0, longest: int = 40):
    out = []
    for i in range(rows):
        if bad_every and i % bad_every == bad_every - 1:
            out.append((i, RowError(DropReason.TEMPLATE_ERROR, f"row {i} is bad")))
            continue
        n = int(rng.integers(2, longest))
        mask = (rng.random(n) < 0.6).astype(np.uint8)
        mask[0], mask[-1] = 0, 1  # trains a token: only no_loss_every rows have none
        if no_loss_every and i % no_loss_every == 0:
            mask[:] = 0
        by = "fastokens" if i % 5 else "hf-fallback"
        out.append((i, Encoded(rng.integers(0, 999, n).astype(np.int32), mask, encoded_by=by)))
    return out


def _same(a: list, b: list) -> bool:
    if [i for i, _ in a] != [i for i, _ in b]:
        return False
    for (_, x), (_, y) in zip(a, b):
        if isinstance(x, RowError) or isinstance(y, RowError):
            if not (isinstance(x, RowError) and isinstance(y, RowError) and str(x) == str(y)):
                return False
        elif not (
            np.array_equal(x.input_ids, y.input_ids)
            and np.array_equal(x.loss_mask, y.loss_mask)
            and (x.loss_tokens, x.encoded_by) == (y.loss_tokens, y.encoded_by)
        ):
            return False
    return True


def test_a_packed_chunk_unpacks_to_its_results_in_row_order_also_after_a_pickle():
    rng = np.random.default_rng(0)
    results = _results(rng, 300, bad_every=7)
    packed = pickle.loads(pickle.dumps(pack_results(results)))
    assert len(packed) == 300 and len(packed.errors) == 300 // 7
    assert _same(packed.unpacked(), results)
    shifted = packed.shifted(1000).unpacked()
    assert _same(shifted, [(i + 1000, r) for i, r in results])
    assert pack_results([]).unpacked() == [] and len(pack_results([])) == 0


def test_kept_whole_marks_the_rows_the_length_policy_would_keep_as_they_are():
    rng = np.random.default_rng(1)
    assert kept_whole(pack_results(_results(rng, 50, longest=30)), 30, False).all()
    packed = pack_results(_results(rng, 50, longest=30))
    assert (kept_whole(packed, 20, False) == (packed.lengths <= 20)).all()  # too long
    assert kept_whole(packed, 20, True).all()  # wrapped packing cuts rows itself
    packed = pack_results(_results(rng, 50, no_loss_every=11))
    assert (~kept_whole(packed, 99, False)).sum() == len(range(0, 50, 11))


CASES = {
    "all kept": dict(),
    "bad rows": dict(bad_every=6),
    "rows without loss": dict(no_loss_every=13),
    "truncate": dict(max_length=25, overlong="truncate"),
    "split": dict(max_length=25, overlong="split"),
    "drop": dict(max_length=25, overlong="drop"),
    "wrapped": dict(max_length=25, packing="wrapped"),
    "repeat": dict(repeat=3),
    "take": dict(take=130),
    "take at a chunk's end": dict(take=100),
    # take reached by the good rows of two chunks, each ending on a bad row: the bad row after
    # the last kept one is neither read nor counted
    "take before a bad row": dict(take=80, bad_every=5),
    "sampled later": dict(kept_rows=True),
}


def _spill_all(tmp_path, name: str, batches, case: dict):
    config = SimpleNamespace(
        packing=case.get("packing", "bfd"),
        max_length=case.get("max_length", 99),
        overlong=case.get("overlong", "truncate"),
        truncation_side="right",
        on_error="skip",
    )
    st = SourceStats(SimpleNamespace(path="s.jsonl"), "train", "0" * 64, example_id_start=5000)
    st.repeat = case.get("repeat", 1)
    if case.get("kept_rows"):
        st.kept_rows = KeptRows()
    spill = Spill(tmp_path / name, "train")
    done = _count_and_spill(config, st, iter(batches), spill, None, case.get("take"))
    data = [spill.read(p) for p in range(len(spill))]
    kept = None if st.kept_rows is None else vars(st.kept_rows)
    counts = {k: v for k, v in vars(st).items() if k not in ("kept_rows", "source")}
    index = [
        list(spill.example_ids),
        list(spill.starts),
        list(spill.lengths),
        list(spill.loss_counts),
    ]
    spill.close()
    return done, counts, kept, index, data


@pytest.mark.parametrize("case", CASES)
def test_a_packed_chunk_is_counted_and_spilled_as_its_rows_one_by_one(tmp_path, case, monkeypatch):
    """Equal to the row-by-row path under every length policy, bad rows, repeats, take and
    samples; and not vacuous: only the rows the policy changes (or every row, where copies or
    a later choice matter) went one by one."""
    rng = np.random.default_rng(2)
    options = {k: v for k, v in CASES[case].items() if k in ("bad_every", "no_loss_every")}
    results = _results(rng, 250, **options)
    chunks = [results[i : i + 50] for i in range(0, 250, 50)]
    by_rows = _spill_all(tmp_path, "rows", chunks, CASES[case])
    one_by_one = []
    spill_rows = pipeline._spill_rows
    monkeypatch.setattr(
        pipeline, "_spill_rows", lambda *a: one_by_one.extend(a[2]) or spill_rows(*a)
    )
    packed = _spill_all(tmp_path, "packed", [pack_results(c) for c in chunks], CASES[case])
    limit = CASES[case].get("max_length", 99)
    changed = [
        i
        for i, r in results
        if isinstance(r, RowError) or r.loss_tokens == 0 or (
            len(r.input_ids) > limit and CASES[case].get("packing") != "wrapped"
        )
    ]  # fmt: skip
    went = [i for i, _ in one_by_one]
    if case in ("repeat", "sampled later"):
        assert went == [i for i, _ in results]
    elif case == "take before a bad row":  # 40 good rows a chunk: the second reaches take
        assert went == [i for i in changed if i < 50] + [i for i, _ in results[50:100]]
    elif "take" in case:  # the chunk that reaches take goes row by row
        assert went == [i for i, _ in results[100 : 100 + len(went)]] and went
    else:
        assert went == changed and (changed or case in ("all kept", "wrapped")), case
    assert by_rows[:4] == packed[:4]
    assert len(by_rows[4]) == len(packed[4]) > 0
    for (ids_a, mask_a), (ids_b, mask_b) in zip(by_rows[4], packed[4]):
        assert np.array_equal(ids_a, ids_b) and np.array_equal(mask_a, mask_b)
