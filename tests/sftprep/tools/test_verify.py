"""`sftprep verify` passes a sound build and names what is wrong with a corrupted one."""

import json
import shutil

import pytest
from typer.testing import CliRunner

import sftprep
from sftprep.cli import app
from sftprep.tools.verify import verify_build
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES


@pytest.fixture(scope="module")
def sound(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "build"
    sftprep.build(
        {
            "sources": [
                str(EXAMPLES / "data" / "chat.jsonl"),
                str(EXAMPLES / "data" / "alpaca.json"),
            ],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(out),
            "max_length": 128,
            "num_proc": 1,
        }
    )
    return out


@pytest.fixture
def copy(sound, tmp_path):
    target = tmp_path / "b"
    shutil.copytree(sound, target)
    return target


def shard_of(build):
    return (
        build
        / json.loads((build / "manifest.json").read_text())["splits"]["train"]["shards"][0]["path"]
    )


def test_sound_build_passes(sound):
    assert verify_build(sound) == []
    result = CliRunner().invoke(app, ["verify", str(sound)])
    assert result.exit_code == 0 and "ok" in result.output


def test_flipped_byte_is_caught_by_sha256(copy):
    shard = shard_of(copy)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert any("sha256" in p for p in verify_build(copy))
    assert verify_build(copy, deep=False) == [], "the quick check looks at sizes only"


def test_truncated_and_missing_shards(copy):
    shard = shard_of(copy)
    shard.write_bytes(shard.read_bytes()[:-10])
    assert any("bytes" in p for p in verify_build(copy, deep=False))
    shard.unlink()
    assert any("missing" in p for p in verify_build(copy, deep=False))
    result = CliRunner().invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1 and "missing" in result.output


def test_edited_manifest(copy):
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["splits"]["train"]["tokens"] += 1
    path.write_text(json.dumps(manifest))
    assert any("tokens" in p for p in verify_build(copy))
    manifest["format_version"] = 99
    path.write_text(json.dumps(manifest))
    assert "format_version" in verify_build(copy)[0]
    del manifest["sources"]
    manifest["format_version"] = 1
    path.write_text(json.dumps(manifest))
    assert any("sources" in p for p in verify_build(copy))
    path.unlink()
    assert "incomplete" in verify_build(copy)[0]


def test_rewritten_shard_with_a_broken_invariant_is_caught(copy):
    import pyarrow as pa

    from schemas import LOSS_MASK, row_schema

    shard = shard_of(copy)
    with pa.memory_map(str(shard)) as source:
        rows = pa.ipc.open_stream(source).read_all().to_pylist()
    rows[0][LOSS_MASK][0] = 1  # train the first token of a segment
    table = pa.Table.from_pylist(rows, schema=row_schema())
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, row_schema()) as writer:
        writer.write_table(table)
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = manifest["splits"]["train"]["shards"][0]
    entry["bytes"] = shard.stat().st_size
    import hashlib

    entry["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_build(copy)
    assert any("first token" in p for p in problems), problems


def test_every_count_the_manifest_records_is_checked(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["train"]["examples"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert any(
        "distinct examples in the shards, the manifest says" in p for p in verify_build(copy)
    )


@pytest.mark.parametrize("content", [b"\x00\xff binary", b"null", b"[1]"])
def test_an_unreadable_manifest_is_one_line(copy, content):
    (copy / "manifest.json").write_bytes(content)
    problems = verify_build(copy)
    assert len(problems) == 1 and "\n" not in problems[0] and "sftprep build" in problems[0]
    assert verify_build(copy / "manifest.json")[0].endswith(
        "is a file, not a build folder: pass the folder `sftprep build --out` wrote"
    )


@pytest.fixture(scope="module")
def fast_build(tmp_path_factory):
    """A build whose every row the fast encoder encoded, from sources of its own."""
    folder = tmp_path_factory.mktemp("full")
    source = folder / "chat.jsonl"
    shutil.copy(EXAMPLES / "data" / "chat.jsonl", source)
    out = folder / "build"
    manifest = sftprep.build(
        {
            "sources": [str(source)],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(out),
            "max_length": 128,
            "num_proc": 1,
            "encoder": "fast",
        }
    )
    assert manifest["tokenizer"]["encoder"] == "fastokens"
    return out


def test_full_rebuilds_with_the_hf_encoder_and_finds_every_shard_equal(fast_build):
    result = CliRunner().invoke(app, ["verify", str(fast_build), "--full"])
    assert result.exit_code == 0 and "ok" in result.output, result.output
    assert not [p for p in fast_build.parent.iterdir() if p.name.startswith(".sftprep-reencode")]


def test_full_names_the_shard_that_differs_from_the_hf_rebuild(fast_build, tmp_path):
    from sftprep.tools.reencode import reencode_problems

    copy = tmp_path / "b"
    shutil.copytree(fast_build, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["max_length"] = 96  # the rebuild packs otherwise: its shards differ
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems = reencode_problems(copy)
    assert problems and "train/" in problems[0] and "--encoder hf" in problems[0], problems


def test_full_says_when_a_source_changed_since_the_build(fast_build, tmp_path):
    from sftprep.tools.reencode import reencode_problems

    copy = tmp_path / "b"
    shutil.copytree(fast_build, copy)
    source = tmp_path / "chat.jsonl"
    source.write_text((fast_build.parent / "chat.jsonl").read_text() * 2)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["sources"] = [str(source)]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems = reencode_problems(copy)
    assert len(problems) == 1 and "changed since the build" in problems[0], problems
