"""The typed manifest: one reader for both stages, a lossless round trip, clear refusals."""

import hashlib
import json
import sys

import pytest

from schemas.manifest import (
    Manifest,
    ManifestError,
    file_sha256,
    open_shard,
    read_manifest,
    write_manifest,
)
from sftprep import build
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "build"
    sources = [str(EXAMPLES / "data" / "chat.jsonl"), str(EXAMPLES / "data" / "alpaca.json")]
    build(
        {
            "sources": sources,
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(out),
            "eval_fraction": 0.2,
            "num_proc": 1,
        }
    )
    return out


def test_read_then_write_gives_back_the_same_bytes(built, tmp_path):
    manifest = read_manifest(built)
    assert isinstance(manifest, Manifest) and manifest.eval is not None
    write_manifest(tmp_path, manifest)
    assert (tmp_path / "manifest.json").read_bytes() == (built / "manifest.json").read_bytes()
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_records_are_typed_and_consistent(built):
    m = read_manifest(built)
    assert m.train.rows == sum(s.rows for s in m.train.shards) > 0
    assert [s.path for s in m.shards()] == [
        s.path for split in m.splits.values() for s in split.shards
    ]
    assert sum(s.rows_kept for s in m.sources) == m.train.examples + m.eval.examples
    assert m.tokenizer.base_fingerprint == m.tokenizer.fingerprint and isinstance(
        m.tokenizer.added_tokens, tuple
    )


@pytest.mark.parametrize(
    "damage,says",
    [
        (lambda p: p.unlink(), "has no manifest.json, so the build is incomplete"),
        (lambda p: p.write_text("{"), "is not valid JSON"),
        (
            lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "format_version": 2})),
            "has format_version 2",
        ),
        (
            lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "splits": {}})),
            "does not follow the manifest schema",
        ),
    ],
)
def test_refusals_name_the_file_and_the_fix(built, tmp_path, damage, says):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "manifest.json").write_text((built / "manifest.json").read_text())
    damage(copy / "manifest.json")
    with pytest.raises(ManifestError, match=says) as err:
        read_manifest(copy)
    assert (
        str(copy) in str(err.value)
        and "sftprep build" in str(err.value)
        and "\n" not in str(err.value)
    )
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")


def test_without_jsonschema_a_manifest_reads_and_a_broken_one_is_refused(
    built, tmp_path, monkeypatch
):
    """A bare GPU image has no jsonschema: reading still works, and shape errors stay one line."""
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import fails, as when not installed
    assert read_manifest(built) == Manifest.from_json(
        json.loads((built / "manifest.json").read_text())
    )
    copy = tmp_path / "copy"
    copy.mkdir()
    data = json.loads((built / "manifest.json").read_text())
    del data["splits"]["train"]["shards"]
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="does not have the manifest's shape") as err:
        read_manifest(copy)
    assert str(copy) in str(err.value) and "\n" not in str(err.value)


def test_open_shard_maps_and_file_sha256_hashes(built):
    shard = read_manifest(built).train.shards[0]
    table = open_shard(built / shard.path)
    assert table.num_rows == shard.rows
    data = (built / shard.path).read_bytes()
    assert file_sha256(built / shard.path) == hashlib.sha256(data).hexdigest() == shard.sha256
    assert file_sha256(built / shard.path, block=7) == shard.sha256  # several blocks
