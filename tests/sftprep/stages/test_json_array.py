"""Streaming a JSON array gives exactly what json.loads gives: the same items, and for a malformed
document the same message, line and column, whatever the block size (down to 1 byte, which cuts
every multi-byte character, string, number and literal)."""

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sftprep
from sftprep.stages.json_array import UnparsedItem, iter_json_array
from tests.conftest import BUNDLED_TOKENIZER

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
separators = st.sampled_from([(",", ":"), (", ", ": "), (" ,\n ", " :\t")])


def streamed(doc: str, block: int):
    try:
        return ("items", list(iter_json_array(io.BytesIO(doc.encode("utf-8")), block)))
    except json.JSONDecodeError as err:
        return ("error", err.msg, err.lineno, err.colno, err.pos)


def reference(doc: str):
    try:
        return ("items", json.loads(doc))
    except json.JSONDecodeError as err:
        return ("error", err.msg, err.lineno, err.colno, err.pos)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(values, max_size=6),
    sep=separators,
    indent=st.sampled_from([None, 1]),
    block=st.sampled_from([1, 2, 5, 64, 1 << 20]),
)
def test_items_equal_json_loads(items, sep, indent, block):
    doc = json.dumps(items, separators=sep, indent=indent, ensure_ascii=False)
    assert streamed(doc, block) == reference(doc) == ("items", items)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(values, min_size=1, max_size=4),
    cut=st.integers(0, 10**6),
    block=st.sampled_from([1, 3, 1 << 20]),
    junk=st.sampled_from(["", "x", ",", "]", "}", " 1"]),
)
def test_malformed_documents_fail_like_json_loads(items, cut, block, junk):
    doc = json.dumps(items, indent=1, ensure_ascii=False)
    doc = doc[: 1 + cut % len(doc)] + junk  # cut anywhere after the '[' and maybe append junk
    expected = reference(doc)
    if expected[0] == "items" and not isinstance(expected[1], list):
        pytest.skip("not an array")
    assert streamed(doc, block) == expected


@pytest.mark.parametrize("bad", [b"\xff", b"\xe6\x97A", b"\xf0\x9f\x98"])
@pytest.mark.parametrize("block", [1, 2, 3, 4, 5, 7, 1 << 20])
def test_invalid_utf8_reports_the_byte_offset_in_the_file(bad, block):
    """Also when the bad sequence starts in one block and ends in the next."""
    doc = b'[{"a": "' + b"x" * 10 + bad + b'"}, 1]'
    with pytest.raises(UnicodeDecodeError) as expected:
        doc.decode("utf-8")
    with pytest.raises(UnicodeDecodeError) as err:
        list(iter_json_array(io.BytesIO(doc), block))
    assert err.value.start == expected.value.start


class CountingReads(io.BytesIO):
    """A file that remembers how many reads it served."""

    reads = 0

    def read(self, size=-1):
        self.reads += 1
        return super().read(size)


def test_a_malformed_item_fails_without_reading_the_rest_of_the_file():
    doc = b'[{"a": 1}, {"a": x}, ' + b", ".join([b'{"k": "' + b"v" * 100 + b'"}'] * 20000) + b"]"
    handle = CountingReads(doc)
    with pytest.raises(json.JSONDecodeError) as err:
        list(iter_json_array(handle, 1024))
    assert (err.value.msg, err.value.pos) == ("Expecting value", doc.index(b"x"))
    assert handle.tell() <= 2 * 1024 < len(doc)


@pytest.mark.parametrize(
    "doc", [b"[1." + b"0" * (1 << 20) + b"]", b'["' + b"s" * (1 << 20) + b'"]']
)
def test_a_huge_item_is_read_in_doubling_blocks(doc):
    """One item of 1 MB read from 64-byte blocks takes a few dozen reads, not 16 thousand."""
    handle = CountingReads(doc)
    assert list(iter_json_array(handle, 64)) == json.loads(doc)
    assert handle.reads < 40


def test_a_json_array_source_is_parsed_a_block_at_a_time(tmp_path, monkeypatch):
    """A build from a JSON array holds one block of its text (plus one item), never the whole file."""
    from sftprep.stages import json_array

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"q{i} " * 50},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(300)
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(rows, indent=1))
    largest_item = max(len(json.dumps(r, indent=1)) for r in rows)
    held = []
    real_more = json_array._Text.more

    def recording_more(self, at_least=0):
        grew = real_more(self, at_least)
        held.append(len(self.buf))
        return grew

    monkeypatch.setattr(json_array, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(json_array._Text, "more", recording_more)
    manifest = sftprep.build(
        {
            "sources": [str(path)],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(tmp_path / "out"),
            "num_proc": 1,
        }
    )
    assert manifest["sources"][0]["rows_kept"] == 300
    assert len(held) > 10  # many blocks were read
    assert max(held) <= 2 * 4096 + largest_item < path.stat().st_size // 10


@pytest.mark.parametrize("block", [1, 7, 1 << 20])
@pytest.mark.parametrize(
    "bad, error",
    [
        ('{"a": ' + "[" * 5000 + '"]}[{\\""' + "]" * 5000 + "}", RecursionError),
        ("[" * 5000 + "]" * 5000, RecursionError),
        ('{"n": ' + "7" * 5000 + "}", ValueError),
        ("-" + "7" * 5000, ValueError),
    ],
)
def test_an_item_past_a_parser_limit_is_yielded_as_unparsed_and_the_array_goes_on(
    bad, error, block
):
    """Too deep or too long a number: that item only, found whole (brackets inside its strings do
    not count), and every other item exactly as json.loads gives it."""
    good = [{"x": "[{"}, [1, 2.5e3]]
    doc = "[\n" + json.dumps(good[0]) + ",\n " + bad + " ,\n" + json.dumps(good[1]) + "]"
    items = list(iter_json_array(io.BytesIO(doc.encode()), block))
    assert len(items) == 3 and [items[0], items[2]] == good
    unparsed = items[1]
    assert isinstance(unparsed, UnparsedItem) and unparsed.line == 3
    assert type(unparsed.error) is error or isinstance(unparsed.error, error)
    assert not isinstance(unparsed.error, json.JSONDecodeError)
