"""Reading a build: zero-copy rows, and every refusal of a build that must not be trained on."""

import json
import re

import pyarrow as pa
import pytest
from conftest import TOKENIZER_DIR, pack, random_rows, write_build

from schemas import (
    EXAMPLE_IDS,
    INPUT_IDS,
    LOSS_MASK,
    MANIFEST_NAME,
    NUM_TOKENS,
    SEQ_LENS,
    tokenizer_fingerprint,
)
from sfttrain.build_reader import check_tokenizer, open_build
from sfttrain.errors import SfttrainError


@pytest.fixture(scope="module")
def tokenizer_source():
    from transformers import AutoTokenizer

    return lambda: AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def test_rows_read_back_exactly_across_shards(tmp_path):
    rows = random_rows(7, 20, per_row=3)
    build = open_build(write_build(tmp_path / "b", rows, eval_rows=rows[:2], rows_per_shard=3))
    assert len(build.train) == 7 and len(build.eval) == 2
    assert len(build.manifest.train.shards) == 3
    for i, written in enumerate(rows):
        got = build.train[i]
        for column in (INPUT_IDS, LOSS_MASK, SEQ_LENS, EXAMPLE_IDS):
            assert got[column].tolist() == written[column]
    assert build.train.num_tokens.tolist() == [20] * 7
    assert build.max_token_id() == max(max(r[INPUT_IDS]) for r in rows)


def test_rows_are_views_into_the_mapped_file(tmp_path):
    build = open_build(write_build(tmp_path / "b", random_rows(50, 200)))
    before = pa.total_allocated_bytes()
    ids = build.train[10][INPUT_IDS]
    assert pa.total_allocated_bytes() == before
    assert not ids.flags.writeable and not ids.flags.owndata  # a view, not a copy


def test_missing_manifest_is_an_incomplete_build(tmp_path):
    out = write_build(tmp_path / "b", random_rows(2, 10))
    (out / MANIFEST_NAME).unlink()
    with pytest.raises(SfttrainError, match="incomplete.*sftprep build"):
        open_build(out)
    with pytest.raises(SfttrainError, match="does not exist"):
        open_build(tmp_path / "nowhere")


def test_unknown_format_version(tmp_path):
    out = write_build(tmp_path / "b", random_rows(2, 10), format_version=2)
    with pytest.raises(SfttrainError, match="format_version 2.*reads format_version 1"):
        open_build(out)


def test_manifest_that_breaks_the_schema(tmp_path):
    out = write_build(tmp_path / "b", random_rows(2, 10), splits={})
    with pytest.raises(SfttrainError, match="schema.*train"):
        open_build(out)


def test_shard_size_and_presence_are_checked(tmp_path):
    out = write_build(tmp_path / "b", random_rows(6, 10), rows_per_shard=2)
    with (out / "train/00000.arrow").open("ab") as f:
        f.write(b"x")
    (out / "train/00002.arrow").unlink()
    with pytest.raises(SfttrainError) as error:
        open_build(out)
    message = str(error.value)
    assert (
        "train/00000.arrow has" in message and "train/00002.arrow is missing" in message
    )  # all problems at once


def test_sha256_is_checked_with_verify(tmp_path):
    out = write_build(tmp_path / "b", random_rows(2, 10))
    shard = out / "train/00000.arrow"
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    open_build(out)  # sizes agree: not detected without --verify
    with pytest.raises(SfttrainError, match="sha256"):
        open_build(out, verify=True)


def test_matching_tokenizer_is_accepted(tmp_path, tokenizer_source):
    build = open_build(write_build(tmp_path / "b", random_rows(2, 10)))
    assert check_tokenizer(build.manifest, tokenizer_source()) == []


def test_other_tokenizer_is_refused(tmp_path, tokenizer_source):
    out = write_build(tmp_path / "b", random_rows(2, 10))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["tokenizer"].update(fingerprint="a" * 64, base_fingerprint="a" * 64)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(SfttrainError, match="not the one the build used.*sftprep build") as err:
        check_tokenizer(open_build(out).manifest, tokenizer_source())
    assert "--tokenizer " not in str(err.value).replace("sftprep build --tokenizer", ""), (
        "the message must not suggest passing the build's tokenizer: with another model's weights "
        "it bypasses the check"
    )


def test_added_tokens_are_added_with_the_builds_ids(tmp_path, tokenizer_source):
    out = write_build(tmp_path / "b", random_rows(2, 10), added_tokens=("<|tool|>", "<|/tool|>"))
    manifest = open_build(out).manifest
    tokenizer = tokenizer_source()
    assert check_tokenizer(manifest, tokenizer) == ["<|tool|>", "<|/tool|>"]
    assert tokenizer.convert_tokens_to_ids("<|tool|>") == 49152
    assert (
        check_tokenizer(manifest, tokenizer) == []
    )  # a tokenizer saved after training already has them


def test_added_tokens_with_other_ids_are_refused(tmp_path, tokenizer_source):
    out = write_build(tmp_path / "b", random_rows(2, 10), added_tokens=("<|tool|>",))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["tokenizer"]["fingerprint"] = "b" * 64
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(SfttrainError, match="after adding the build's added_tokens"):
        check_tokenizer(open_build(out).manifest, tokenizer_source())


def test_fingerprint_helper_sees_added_tokens(tokenizer_source):
    # Guard: the refusals above rely on the fingerprint changing when tokens are added.
    tokenizer = tokenizer_source()
    before = tokenizer_fingerprint(tokenizer.backend_tokenizer)
    tokenizer.add_tokens(["<|x|>"], special_tokens=True)
    assert tokenizer_fingerprint(tokenizer.backend_tokenizer) != before


def test_wrong_shard_schema_is_refused(tmp_path):
    out = write_build(tmp_path / "b", [pack([1, 2, 3])])
    shard = out / "train/00000.arrow"
    table = pa.table({INPUT_IDS: pa.array([[1, 2, 3]], pa.list_(pa.int64()))})
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["splits"]["train"]["shards"][0]["bytes"] = shard.stat().st_size
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(SfttrainError, match="shard contract"):
        open_build(out)


@pytest.mark.parametrize(
    "damage,says",
    [
        (lambda r: r[LOSS_MASK].__setitem__(3, 7), "loss_mask holds 7"),
        (lambda r: r.__setitem__(NUM_TOKENS, 0), "num_tokens is 0 but the row has 10 tokens"),
        (lambda r: r[INPUT_IDS].__setitem__(2, -5), "a token id outside"),
        (lambda r: r.__setitem__(SEQ_LENS, [4, 4]), "seq_lens [4, 4] do not split"),
    ],
)
def test_a_row_that_breaks_the_contract_stops_training_naming_shard_and_row(tmp_path, damage, says):
    rows = random_rows(4, 10)
    damage(rows[3])
    build = open_build(write_build(tmp_path / "b", rows, rows_per_shard=2))
    assert build.train[2][INPUT_IDS].tolist() == rows[2][INPUT_IDS]  # intact rows read as before
    with pytest.raises(SfttrainError, match=rf"train/00001.arrow, row 1: {re.escape(says)}"):
        build.train[3]


def test_an_empty_train_split_is_refused(tmp_path):
    with pytest.raises(SfttrainError, match="the train split has no examples"):
        open_build(write_build(tmp_path / "b", []))


def test_a_shard_listed_twice_is_refused(tmp_path):
    out = write_build(tmp_path / "b", random_rows(2, 10))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["splits"]["train"]["shards"] *= 2
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(SfttrainError, match="listed twice"):
        open_build(out)


def test_an_unreadable_shard_of_the_right_size_is_one_line(tmp_path):
    out = write_build(tmp_path / "b", random_rows(2, 10))
    shard = out / "train/00000.arrow"
    shard.write_bytes(b"\0" * shard.stat().st_size)
    with pytest.raises(SfttrainError, match="is not a readable Arrow stream"):
        open_build(out)


@pytest.mark.parametrize("text", ["\x00\xff binary", "null", "[1, 2]"])
def test_a_manifest_that_is_not_a_mapping_is_one_line(tmp_path, text):
    out = write_build(tmp_path / "b", random_rows(2, 10))
    (out / MANIFEST_NAME).write_bytes(text.encode("latin-1"))
    with pytest.raises(SfttrainError) as err:
        open_build(out)
    assert "\n" not in str(err.value) and "sftprep build" in str(err.value)
