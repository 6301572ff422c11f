"""The build end to end: sources of every kind, config file + flags, manifest, shards, eval split,
chat template setup, reruns, and the CLI."""

import json
import shutil
import sys

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import sftprep
from schemas import INPUT_IDS, manifest_schema
from sftprep.cli import app
from sftprep.errors import SftprepError
from sftprep.stages.sources import iter_rows, resolve_sources
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES, hf_tokenizer
from tests.sftprep.build_checks import check_build, examples_by_id, load_manifest

ROWS = [{"prompt": f"Question {i}?", "completion": f" Answer {i}."} for i in range(20)]
runner = CliRunner()


def build(tmp_path, sources, **config):
    out = tmp_path / config.pop("out_name", "build")
    manifest = sftprep.build(
        {
            "sources": [str(s) for s in sources],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(out),
            "num_proc": 1,
            **config,
        }
    )
    check_build(out)
    return out, manifest


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def sources(tmp_path):
    """The same rows as JSONL, JSON, Parquet, CSV, Arrow (stream and file formats) and a save_to_disk folder."""
    table = pa.Table.from_pylist(ROWS)
    paths = {"jsonl": write_jsonl(tmp_path / "d.jsonl", ROWS)}
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    paths["json"] = tmp_path / "d.json"
    pq.write_table(table, tmp_path / "d.parquet")
    paths["parquet"] = tmp_path / "d.parquet"
    (tmp_path / "d.csv").write_text(
        "prompt,completion\n" + "".join(f'"{r["prompt"]}","{r["completion"]}"\n' for r in ROWS)
    )
    paths["csv"] = tmp_path / "d.csv"
    with (
        pa.OSFile(str(tmp_path / "d.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table)
    paths["arrow"] = tmp_path / "d.arrow"
    with (
        pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        for batch in table.to_batches(max_chunksize=7):  # the IPC file format, in several batches
            writer.write_batch(batch)
    paths["arrow_file"] = tmp_path / "f.arrow"
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    paths["saved"] = tmp_path / "saved"
    return paths


def test_every_source_kind_gives_the_same_examples(tmp_path, sources):
    reference = None
    for kind, path in sources.items():
        out, manifest = build(tmp_path, [path], out_name=f"b-{kind}", packing="none")
        assert manifest["sources"][0]["format"] == "prompt-completion", kind
        examples = examples_by_id(out)
        assert len(examples) == len(ROWS)
        reference = reference or examples
        assert examples == reference, kind


def test_globs_expand_in_sorted_order_and_missing_sources_are_all_reported(tmp_path, sources):
    _, manifest = build(tmp_path, [tmp_path / "d.*"], packing="none")
    assert [s["path"].rsplit(".", 1)[1] for s in manifest["sources"]] == [
        "arrow",
        "csv",
        "json",
        "jsonl",
        "parquet",
    ]
    assert [s["example_id_start"] for s in manifest["sources"]] == [0, 20, 40, 60, 80]
    with pytest.raises(SftprepError) as err:
        build(tmp_path, [tmp_path / "nope.jsonl", tmp_path / "none*.json"], out_name="x")
    assert "nope.jsonl" in str(err.value) and "none*.json" in str(err.value)


def test_hub_name_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SftprepError, match="some-org/some-dataset"):
        build(tmp_path, ["some-org/some-dataset"])
    assert not (tmp_path / "build").exists()


def test_manifest_validates_and_records_sources_tokenizer_and_shards(tmp_path, sources):
    out, manifest = build(tmp_path, [sources["jsonl"]])
    jsonschema.validate(manifest, manifest_schema())
    assert manifest == load_manifest(out)
    src = manifest["sources"][0]
    assert src["rows_read"] == src["rows_kept"] == 20 and len(src["content_sha256"]) == 64
    tok = manifest["tokenizer"]
    hf = hf_tokenizer(str(BUNDLED_TOKENIZER))
    assert (
        tok["length"] == len(hf) and tok["eos_id"] == hf.eos_token_id and tok["added_tokens"] == []
    )
    assert (
        manifest["config"]["max_length"] == 2048 and manifest["splits"]["train"]["examples"] == 20
    )


def test_shards_open_memory_mapped_and_with_datasets(tmp_path, sources):
    out, manifest = build(tmp_path, [sources["jsonl"]])
    shard = out / manifest["splits"]["train"]["shards"][0]["path"]
    with pa.memory_map(str(shard)) as source:
        table = pa.ipc.open_stream(source).read_all()
    assert table.num_rows == manifest["splits"]["train"]["rows"]
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_file(str(shard))
    assert ds[0][INPUT_IDS] == table.column(INPUT_IDS)[0].as_py()


def test_rerun_is_up_to_date_and_a_different_build_needs_overwrite(tmp_path, sources):
    out, first = build(tmp_path, [sources["jsonl"]])
    result = runner.invoke(
        app,
        [
            "build",
            str(sources["jsonl"]),
            "--tokenizer",
            str(BUNDLED_TOKENIZER),
            "--out",
            str(out),
            "--num-proc",
            "1",
        ],
    )
    assert result.exit_code == 0 and "up to date" in result.output
    assert load_manifest(out)["created_at"] == first["created_at"]
    with pytest.raises(SftprepError, match="--overwrite"):
        build(tmp_path, [sources["jsonl"]], max_length=64)
    assert load_manifest(out)["fingerprint"] == first["fingerprint"], "the old build is untouched"
    _, second = build(tmp_path, [sources["jsonl"]], max_length=64, overwrite=True)
    assert second["fingerprint"] != first["fingerprint"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build")], (
        "no temporary folders left"
    )


def test_eval_fraction_is_seeded_stable_and_disjoint(tmp_path, sources):
    _, a = build(tmp_path, [sources["jsonl"]], eval_fraction=0.25, out_name="a")
    _, b = build(tmp_path, [sources["jsonl"]], eval_fraction=0.25, out_name="b")
    _, c = build(tmp_path, [sources["jsonl"]], eval_fraction=0.25, seed=7, out_name="c")
    ids = {
        n: (set(examples_by_id(tmp_path / n, "train")), set(examples_by_id(tmp_path / n, "eval")))
        for n in "abc"
    }
    assert ids["a"] == ids["b"] and ids["a"][1] != ids["c"][1]
    train, held = ids["a"]
    assert len(held) == 5 and not train & held and train | held == set(range(20))
    assert a["splits"]["eval"]["examples"] == 5 and a["sources"][0]["split"] == "train+eval"


def test_eval_sources_make_the_eval_split(tmp_path, sources):
    out, manifest = build(tmp_path, [sources["jsonl"]], eval_sources=[str(sources["parquet"])])
    assert [s["split"] for s in manifest["sources"]] == ["train", "eval"]
    assert set(examples_by_id(out, "eval")) == set(range(20, 40))


def test_chatml_setup_adds_tokens_keeps_pad_distinct_and_suggests_itself(tmp_path):
    tok = tmp_path / "tok"
    shutil.copytree(BUNDLED_TOKENIZER, tok)
    (tok / "chat_template.jinja").unlink()
    cfg = json.loads((tok / "tokenizer_config.json").read_text())
    (tok / "tokenizer_config.json").write_text(
        json.dumps(
            {
                **cfg,
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        )
    )
    # give the tokenizer a vocabulary without the ChatML tokens
    data = json.loads((tok / "tokenizer.json").read_text())
    data["added_tokens"] = [
        t for t in data["added_tokens"] if t["content"] not in ("<|im_start|>", "<|im_end|>")
    ]
    data["model"]["vocab"] = {
        k: v for k, v in data["model"]["vocab"].items() if k not in ("<|im_start|>", "<|im_end|>")
    }
    (tok / "tokenizer.json").write_text(json.dumps(data))
    chat = write_jsonl(
        tmp_path / "c.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
    )
    with pytest.raises(SftprepError, match="--chat-template chatml"):
        sftprep.build(
            {
                "sources": [str(chat)],
                "tokenizer": str(tok),
                "out": str(tmp_path / "x"),
                "num_proc": 1,
            }
        )
    assert not (tmp_path / "x").exists()
    manifest = sftprep.build(
        {
            "sources": [str(chat)],
            "tokenizer": str(tok),
            "out": str(tmp_path / "b"),
            "chat_template": "chatml",
            "pad_vocab_to_multiple_of": 64,
            "num_proc": 1,
        }
    )
    t = manifest["tokenizer"]
    assert (
        t["added_tokens"] == ["<|im_start|>", "<|im_end|>"] and t["pad_vocab_to_multiple_of"] == 64
    )
    assert t["eos_id"] != t["pad_id"] and t["length"] > max(t["eos_id"], t["pad_id"], t["bos_id"])
    assert t["fingerprint"] != t["base_fingerprint"]
    ((ids, mask),) = examples_by_id(tmp_path / "b").values()
    assert ids[0] == t["bos_id"] and ids.count(t["eos_id"]) == 2 and mask[-2] == 1


def test_chat_template_file_overrides_the_tokenizer_template(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text(
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    chat = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo there"},
                ]
            }
        ],
    )
    out, manifest = build(tmp_path, [chat], chat_template=str(template), packing="none")
    hf = hf_tokenizer(str(BUNDLED_TOKENIZER))
    ((ids, mask),) = examples_by_id(out).values()
    assert hf.decode(ids) == "[user] hi\n[assistant] yo there\n"
    assert hf.decode([i for i, m in zip(ids, mask) if m]).strip() == "yo there"
    assert manifest["tokenizer"]["chat_template_source"] == "file:t.jinja"


def test_cli_config_file_with_flag_overrides(tmp_path):
    out = tmp_path / "cli-build"
    result = runner.invoke(
        app,
        [
            "build",
            "--config",
            str(EXAMPLES / "build.yaml"),
            "--out",
            str(out),
            "--max-length",
            "256",
            "--num-proc",
            "1",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert manifest["config"]["max_length"] == 256 and manifest["config"]["eval_fraction"] == 0.1
    assert {s["format"] for s in manifest["sources"]} == {"messages", "sharegpt", "alpaca"}
    check_build(out)


def test_cli_reports_config_problems_on_one_line_each_and_exits_2(tmp_path):
    result = runner.invoke(
        app,
        [
            "build",
            "x.jsonl",
            "--out",
            str(tmp_path / "o"),
            "--packing",
            "tight",
            "--loss-on",
            "everything",
        ],
    )
    assert result.exit_code == 2
    assert (
        "--packing" in result.output
        and "--loss-on" in result.output
        and "--tokenizer" in result.output
    )
    bad = tmp_path / "c.yaml"
    bad.write_text("max_lenght: 5\n")
    result = runner.invoke(app, ["build", "--config", str(bad)])
    assert result.exit_code == 2 and "max_lenght" in result.output


def test_build_help_documents_every_config_key():
    from sftprep.config import FIELD_NAMES

    result = runner.invoke(
        app, ["build", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"}
    )
    flags = {
        "sources": "SOURCE...",
        "eval_sources": "--eval",
        "concat_token": "--no-concat-token",
        "special_tokens": "--no-special-tokens",
    }
    for name in FIELD_NAMES:
        assert flags.get(name, "--" + name.replace("_", "-")) in result.output, name


def test_a_build_imports_neither_torch_nor_transformers_nor_pandas(tmp_path):
    """sftprep must not import torch; transformers and pandas would only slow a build down (pandas is
    what pyarrow's pa.array() imports to check for a Series)."""
    import subprocess

    src = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                ]
            }
        ]
        * 3,
    )
    code = (
        "import sys, sftprep, sftprep.cli\n"
        f"sftprep.build({{'sources': [{str(src)!r}], 'tokenizer': {str(BUNDLED_TOKENIZER)!r}, 'out': {str(tmp_path / 'out')!r}, 'num_proc': 1}})\n"
        "heavy = sorted({'torch', 'transformers', 'pandas'} & set(sys.modules))\n"
        "assert not heavy, f'a build imported {heavy}'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "out" / "manifest.json").exists()


def test_num_proc_zero_runs_in_one_process_on_few_cores_and_one_worker_per_core_beyond():
    from sftprep.parallel import IN_PROCESS_UP_TO_CORES, WORKERS_FROM_BYTES, worker_processes

    assert worker_processes(3, 64) == 3  # an explicit count is obeyed
    assert worker_processes(0, 2) == 1
    assert worker_processes(0, IN_PROCESS_UP_TO_CORES) == 1
    assert worker_processes(0, IN_PROCESS_UP_TO_CORES + 1) == IN_PROCESS_UP_TO_CORES + 1
    assert worker_processes(0, 2, WORKERS_FROM_BYTES - 1) == 1  # a small source: one process
    assert worker_processes(0, 2, WORKERS_FROM_BYTES) == 2  # a big one: a worker per core
    assert worker_processes(0, 1, WORKERS_FROM_BYTES) == 1


def test_num_proc_zero_counts_rows_only_when_the_bytes_do_not_decide():
    from sftprep.parallel import WORKERS_FROM_BYTES, WORKERS_FROM_ROWS, worker_processes

    asked = []

    def rows(n):
        return lambda: asked.append(n) or n

    assert worker_processes(0, 2, 1000, rows(WORKERS_FROM_ROWS)) == 2  # many short rows
    assert worker_processes(0, 2, 1000, rows(WORKERS_FROM_ROWS - 1)) == 1
    assert asked == [WORKERS_FROM_ROWS, WORKERS_FROM_ROWS - 1]
    for decided in (worker_processes(0, 2, WORKERS_FROM_BYTES, rows(1)),
                    worker_processes(0, 1, 0, rows(1)), worker_processes(2, 2, 0, rows(1)),
                    worker_processes(0, 64, 0, rows(1))):  # fmt: skip
        assert decided > 0
    assert asked == [WORKERS_FROM_ROWS, WORKERS_FROM_ROWS - 1], (
        "no count when bytes or cores decide"
    )


def test_the_manifest_records_the_processes_that_encoded(tmp_path):
    """`workers` is what ran, not what --num-proc asked: a source too small for a pool (fewer
    than POOL_MIN_CHUNKS chunks) is encoded in the build process even under --num-proc 2."""
    from sftprep.pipeline import CHUNK_ROWS, POOL_MIN_CHUNKS

    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(10)))
    rows = CHUNK_ROWS * (POOL_MIN_CHUNKS + 1)
    big.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(rows)))
    workers = {}
    for name, sources in (("small", [small]), ("both", [small, big])):
        manifest = sftprep.build(
            {"sources": [str(s) for s in sources], "tokenizer": str(BUNDLED_TOKENIZER),
             "out": str(tmp_path / name), "max_length": 64, "num_proc": 2}
        )  # fmt: skip
        workers[name] = manifest["workers"]
    assert workers == {"small": 1, "both": 2}


LONG_ROW = {"text": "x" * 70_000}  # a first line longer than any read-ahead block
JSON_SHAPES = {
    "JSON lines with a long first line": (
        "\n".join(json.dumps(r) for r in [LONG_ROW, *ROWS]) + "\n",
        [LONG_ROW, *ROWS],
    ),
    "JSON lines after blank lines": ("\n \n" + "\n".join(json.dumps(r) for r in ROWS), ROWS),
    "an array after much whitespace": (" " * 70_000 + "\n" + json.dumps(ROWS), ROWS),
    "one pretty-printed object": (json.dumps(ROWS[0], indent=2) + "\n", ROWS[:1]),
    "one object on one line": ("\n" + json.dumps(ROWS[0]) + "\n\n", ROWS[:1]),
}


@pytest.mark.parametrize("shape", sorted(JSON_SHAPES))
def test_a_json_file_is_read_as_what_it_holds(tmp_path, shape):
    """An array, one object, or JSON lines saved as .json, whatever the whitespace and line lengths."""
    text, rows = JSON_SHAPES[shape]
    (tmp_path / "d.json").write_text(text)
    [source] = resolve_sources((str(tmp_path / "d.json"),))
    assert list(iter_rows(source)) == rows


def test_a_json_file_of_only_whitespace_is_empty(tmp_path):
    (tmp_path / "d.json").write_text(" \n" * 40_000)
    [source] = resolve_sources((str(tmp_path / "d.json"),))
    with pytest.raises(SftprepError, match="empty"):
        list(iter_rows(source))
