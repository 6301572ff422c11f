"""--engine ray builds what --engine local builds, byte for byte: the README's example sources and
3,000 conversations (JSONL in byte ranges, Parquet in row groups, Arrow in record batches, a
fraction and a take); a worker killed mid-build; a node with other versions refused in one line;
an up-to-date rerun that never starts Ray. One local Ray (2 CPUs) serves the whole module."""

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sftprep import ray_engine
from sftprep.cli import app
from sftprep.errors import SftprepError
from sftprep.pipeline import as_config, run_build
from sftprep.stages.source_chunks import plan_chunks
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES
from tests.sftprep.chat_corpus import chats

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

SMALL_CHUNKS = (16 << 10, 64 << 10)  # several chunks per source at test sizes
IGNORED = ("created_at", "elapsed_s", "engine", "workers")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One Ray for the module, its files under the test session's folder (short enough for
    Ray's Unix socket paths, which must stay under 108 bytes)."""
    temp = tmp_path_factory.getbasetemp() / "ray"
    assert len(str(temp)) < 50, temp
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """3,000 conversations as JSONL (with blank and malformed lines), and parts of them as
    Parquet (row groups of 100) and an Arrow stream (batches of 100)."""
    folder = tmp_path_factory.mktemp("corpus")
    plain = [c for c in chats(120) if all(_plain(m) for m in c["messages"])]  # what SmolLM2 renders
    rows = (plain * 32)[:3000]
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    lines[1234] = '{"messages": [{"role": "user", "content": "cut'  # malformed, mid-file
    lines[2100] = ""  # a blank line: not a row, but a line
    (folder / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    table = pa.Table.from_pylist([{"messages": json.dumps(r["messages"])} for r in rows[:1500]])
    pq.write_table(table, folder / "part.parquet", row_group_size=100)
    sink = pa.OSFile(str(folder / "part.arrow"), "wb")
    with sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=100):
            writer.write_batch(batch)
    return {name: folder / name for name in ("conversations.jsonl", "part.parquet", "part.arrow")}


def _plain(message: dict) -> bool:
    return (
        isinstance(message.get("content"), str)
        and message["role"] != "tool"
        and "tool_calls" not in message
    )


def _config(out: Path, sources: list, **keys) -> dict:
    return {
        "sources": sources,
        "tokenizer": str(BUNDLED_TOKENIZER),
        "out": str(out),
        "max_length": 512,
        "encoder": "hf",  # fastokens loads lazily: its row counts vary run to run, not the ids
        "on_error": "skip",
        "seed": 3,
        **keys,
    }


def _readme_sources(corpus: dict) -> list:
    return [
        str(EXAMPLES / "data" / "chat.jsonl"),
        str(EXAMPLES / "data" / "alpaca.json"),  # a JSON array: row chunks sent from here
        str(corpus["conversations.jsonl"]),
        {"path": str(corpus["part.parquet"]), "format": "messages"},
        {"path": str(corpus["part.arrow"]), "take": 700},
    ]


def _same_build(local: Path, other: Path) -> None:
    """The same manifest but for timing and engine fields, and byte-identical shards."""
    a, b = (json.loads((p / "manifest.json").read_text()) for p in (local, other))
    assert (a["engine"], b["engine"]) == ("local", "ray") and b["workers"] == 2
    for manifest in (a, b):
        for key in IGNORED:
            manifest.pop(key)
        for key in ("engine", "ray_address", "ray_workers", "out"):
            manifest["config"].pop(key)
    assert a == b
    shards = [s["path"] for split in a["splits"].values() for s in split["shards"]]
    assert shards and all((local / s).read_bytes() == (other / s).read_bytes() for s in shards)


@pytest.fixture(scope="module")
def local_build(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    run_build(as_config(_config(out, _readme_sources(corpus))))
    return out


def test_ray_builds_the_local_build_byte_for_byte(
    local_ray, corpus, local_build, tmp_path, monkeypatch
):
    monkeypatch.setattr(ray_engine, "CHUNK_BYTES", SMALL_CHUNKS)
    for name, kind in (("conversations.jsonl", "jsonl"), ("part.parquet", "parquet")):
        assert len(plan_chunks(str(corpus[name]), kind, "", SMALL_CHUNKS[0])) > 4  # not one chunk
    result = run_build(as_config(_config(tmp_path / "out", _readme_sources(corpus), engine="ray")))
    _same_build(local_build, tmp_path / "out")
    manifest = result.manifest
    assert manifest.dropped == {"malformed_json": 1} and manifest.sources[2].rows_read == 2999
    assert manifest.sources[4].rows_kept == 700
    assert any(s.turns_located_by for s in manifest.sources)  # compared with the local build's


def test_a_fraction_and_a_bad_row_give_the_same_build_and_message(
    local_ray, corpus, tmp_path, monkeypatch
):
    monkeypatch.setattr(ray_engine, "CHUNK_BYTES", SMALL_CHUNKS)
    sources = [{"path": str(corpus["conversations.jsonl"]), "fraction": 0.3}]
    for engine in ("local", "ray"):
        run_build(as_config(_config(tmp_path / engine, sources, engine=engine)))
    _same_build(tmp_path / "local", tmp_path / "ray")
    messages = []
    for engine in ("local", "ray"):
        config = _config(tmp_path / f"raise-{engine}", [str(corpus["conversations.jsonl"])])
        with pytest.raises(SftprepError) as err:
            run_build(as_config({**config, "on_error": "raise", "engine": engine}))
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "row 1234: line 1235 is not valid JSON" in messages[0]


def test_a_worker_killed_on_a_chunk_is_retried_and_the_build_is_unchanged(
    local_ray, corpus, local_build, tmp_path, monkeypatch
):
    monkeypatch.setattr(ray_engine, "CHUNK_BYTES", SMALL_CHUNKS)
    marker = tmp_path / "died"
    hooks = {"die": {"chunk": 3, "marker": str(marker)}}
    monkeypatch.setenv(ray_engine.TEST_HOOKS_ENV, json.dumps(hooks))
    run_build(as_config(_config(tmp_path / "out", _readme_sources(corpus), engine="ray")))
    assert marker.exists()  # a worker did exit on chunk 3
    _same_build(local_build, tmp_path / "out")


def test_a_node_with_other_versions_is_refused_in_one_line(local_ray, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    hooks = {"versions": {"tokenizers": "0.0.1"}}
    monkeypatch.setenv(ray_engine.TEST_HOOKS_ENV, json.dumps(hooks))
    source = EXAMPLES / "data" / "chat.jsonl"
    out = tmp_path / "out"
    command = ["build", str(source), "--tokenizer", str(BUNDLED_TOKENIZER), "--out", str(out)]
    result = CliRunner().invoke(app, [*command, "-q", "--engine", "ray"])
    import tokenizers

    node = ray.util.get_node_ip_address()
    assert result.exit_code == 1 and result.output == (
        f"error: --engine ray: node {node} has tokenizers 0.0.1, this machine "
        f"{tokenizers.__version__}; install the same versions on every node\n"
    )
    assert not out.exists()


def test_an_up_to_date_rerun_never_starts_ray(local_ray, tmp_path, monkeypatch):
    config = as_config(_config(tmp_path / "out", [str(EXAMPLES / "data" / "chat.jsonl")]))
    first = run_build(as_config({**config.to_dict(), "engine": "ray"}))
    assert not first.up_to_date and first.manifest.engine == "ray"

    def no_ray(*args):
        raise AssertionError("Ray was started for a build that is up to date")

    monkeypatch.setattr(ray_engine, "ray_encoders", no_ray)
    monkeypatch.setattr(ray, "init", no_ray)
    again = run_build(as_config({**config.to_dict(), "engine": "ray", "ray_workers": 1}))
    assert again.up_to_date
    assert run_build(config).up_to_date  # and the local engine finds the same build
    shutil.rmtree(tmp_path / "out")
