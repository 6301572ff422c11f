"""Recipes: per-source settings and mixtures (take, fraction, repeat), recorded per source in the
manifest, deterministic for any worker count, and refused in one line when they cannot hold."""

import json

import pytest

import sftprep
from sftprep.errors import ConfigError, SftprepError
from sftprep.tools.verify import verify_build
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES
from tests.sftprep.build_checks import check_build, load_manifest, read_rows
from tests.sftprep.worker_pool import force_worker_pool

DATA = EXAMPLES / "data"


def chats(n: int, tag: str = "q") -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"{tag} {i}?"},
                {"role": "assistant", "content": f"answer {i}."},
            ]
        }
        for i in range(n)
    ]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def build(tmp_path, sources, name="out", **config):
    return sftprep.build(
        {
            "sources": sources,
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(tmp_path / name),
            "num_proc": 1,
            **config,
        }
    )


def shard_bytes(out) -> list[bytes]:
    manifest = load_manifest(out)
    return [
        (out / s["path"]).read_bytes()
        for split in manifest["splits"].values()
        for s in split["shards"]
    ]


def test_per_source_keys_override_the_global_ones_for_that_source_only(tmp_path):
    from tokenizers import Tokenizer

    qa = write_jsonl(
        tmp_path / "qa.jsonl", [{"question": f"q{i}", "answer": f"a{i}"} for i in range(3)]
    )
    notes = write_jsonl(tmp_path / "notes.jsonl", [{"body": f"note {i}"} for i in range(2)])
    chat = write_jsonl(tmp_path / "chat.jsonl", chats(2))
    same = write_jsonl(tmp_path / "same.jsonl", chats(2))
    manifest = build(
        tmp_path,
        [
            chat,
            {
                "path": qa,
                "prompt_template": "Q: {question}\nA:",
                "completion_template": " {answer}",
            },
            {"path": notes, "format": "text", "text_field": "body"},
            {"path": same, "system_prompt": "Be brief.", "loss_on": "all"},
        ],
        packing="none",
    )
    formats = [s["format"] for s in manifest["sources"]]
    assert formats == ["messages", "prompt-template", "text", "messages"]
    assert manifest["sources"][1]["settings"]["prompt_template"] == "Q: {question}\nA:"
    check_build(tmp_path / "out")
    by_id = {r["example_ids"][0]: r for r in read_rows(tmp_path / "out", "train")}
    start = {s["path"]: s["example_id_start"] for s in manifest["sources"]}
    decode = Tokenizer.from_file(str(BUNDLED_TOKENIZER / "tokenizer.json")).decode
    plain, own = by_id[start[chat]], by_id[start[same]]
    assert "Be brief." in decode(own["input_ids"]) and "Be brief." not in decode(plain["input_ids"])
    assert "Q: q0\nA: a0" in decode(by_id[start[qa]]["input_ids"])
    # loss_on all trains every token but the first; the global assistant-only trains less
    assert sum(own["loss_mask"]) == len(own["input_ids"]) - 1
    assert sum(plain["loss_mask"]) < len(plain["input_ids"]) - 1


def test_take_keeps_the_first_n_rows_and_stops_reading(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", chats(50))
    manifest = build(tmp_path, [{"path": src, "take": 7}], packing="none")
    source = manifest["sources"][0]
    assert (source["rows_read"], source["rows_kept"], manifest["splits"]["train"]["examples"]) == (
        7,
        7,
        7,
    )
    with pytest.raises(
        SftprepError, match=r"take 60 asks for more rows than the source has: 50 of its 50"
    ):
        build(tmp_path, [{"path": src, "take": 60}], name="more")
    assert not (tmp_path / "more").exists()


def test_fraction_is_seeded_and_stable_when_another_source_is_added(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", chats(400))
    other = write_jsonl(tmp_path / "o.jsonl", chats(30, "other"))
    alone = build(tmp_path, [{"path": src, "fraction": 0.25}], name="a", packing="none")
    mixed = build(tmp_path, [other, {"path": src, "fraction": 0.25}], name="b", packing="none")
    reseeded = build(tmp_path, [{"path": src, "fraction": 0.25}], name="c", packing="none", seed=1)
    first = alone["sources"][0]
    assert 70 <= first["rows_kept"] <= 130 and first["rows_read"] == 400
    assert first["rows_unselected"] == 400 - first["rows_kept"]

    def chosen(out, manifest, index):
        start = manifest["sources"][index]["example_id_start"]
        return sorted(
            r["example_ids"][0] - start
            for r in read_rows(tmp_path / out, "train")
            if r["example_ids"][0] >= start
        )

    assert chosen("a", alone, 0) == chosen("b", mixed, 1), (
        "adding a source changed which rows are taken"
    )
    assert chosen("a", alone, 0) != chosen("c", reseeded, 0), "the seed decides the subset"


def test_repeat_makes_distinct_examples_that_stay_together_in_the_eval_split(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", chats(40))
    once = build(tmp_path, [src], name="once", packing="none")
    thrice = build(tmp_path, [{"path": src, "repeat": 3}], name="thrice", packing="none")
    source = thrice["sources"][0]
    assert source["repeat"] == 3 and source["rows_kept"] == 40
    assert thrice["splits"]["train"]["examples"] == 120
    assert source["loss_tokens"] == 3 * once["sources"][0]["loss_tokens"]
    check_build(tmp_path / "thrice")
    assert verify_build(tmp_path / "thrice") == []
    build(tmp_path, [{"path": src, "repeat": 3}], name="held", eval_fraction=0.2, packing="none")
    rows = {
        split: {i for r in read_rows(tmp_path / "held", split) for i in r["example_ids"]}
        for split in ("train", "eval")
    }
    assert rows["eval"] and not ({i // 3 for i in rows["train"]} & {i // 3 for i in rows["eval"]})


def test_a_mixture_is_byte_identical_for_any_worker_count(tmp_path, monkeypatch):
    a = write_jsonl(tmp_path / "a.jsonl", chats(300))
    b = write_jsonl(tmp_path / "b.jsonl", chats(200, "b"))
    sources = [
        {"path": a, "fraction": 0.5},
        {"path": b, "repeat": 2},
        {"path": str(DATA / "alpaca.json"), "take": 2},
    ]
    one = build(tmp_path, sources, name="one")
    force_worker_pool(monkeypatch)
    two = build(tmp_path, sources, name="two", num_proc=2)
    assert one["fingerprint"] == two["fingerprint"] and one["sources"] == two["sources"]
    assert verify_build(tmp_path / "one") == [], "sftprep verify accepts a mixture"
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    shares = [s["loss_share"] for s in one["sources"]]
    assert abs(sum(shares) - 1) < 1e-5 and all(0 < s < 1 for s in shares)


def test_settings_enter_the_fingerprint(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", chats(20))
    plain = build(tmp_path, [src], name="a")
    taken = build(tmp_path, [{"path": src, "take": 10}], name="b")
    assert plain["fingerprint"] != taken["fingerprint"]


@pytest.mark.parametrize(
    "entry, says",
    [
        ({"path": "d.jsonl", "formt": "text"}, r"sources\[0\] \(d.jsonl\): unknown key 'formt'"),
        ({"path": "d.jsonl", "take": 0}, r"sources\[0\] \(d.jsonl\): take is 0"),
        ({"path": "d.jsonl", "fraction": 1.5}, r"fraction is 1.5; it must be a number in \(0, 1\]"),
        ({"path": "d.jsonl", "take": 2, "repeat": 2}, r"take and repeat both given"),
        (
            {"path": "d.jsonl", "loss_on": "most"},
            r"sources\[0\] \(d.jsonl\): loss_on \(--loss-on\): expected one of",
        ),
        (
            {"path": "d.jsonl", "completion_template": "{a}"},
            r"sources\[0\] \(d.jsonl\): --completion-template needs --prompt-template",
        ),
        ({"take": 3}, r"sources\[0\]: a source mapping needs `path`"),
    ],
)
def test_bad_per_source_settings_are_one_line_each_naming_the_source_and_key(tmp_path, entry, says):
    with pytest.raises(ConfigError, match=says):
        build(tmp_path, [entry])
    assert not (tmp_path / "out").exists()


def test_take_on_a_glob_of_several_files_is_refused(tmp_path):
    for name in ("a", "b"):
        write_jsonl(tmp_path / f"{name}.jsonl", chats(3))
    with pytest.raises(SftprepError, match="matches 2 files and asks to take 2 rows"):
        build(tmp_path, [{"path": str(tmp_path / "*.jsonl"), "take": 2}])


def test_the_readme_recipe_is_examples_recipe_yaml_and_builds_as_written(tmp_path):
    from sftprep.config import load_config
    from sftprep.pipeline import run_build
    from tests.conftest import REPO

    recipe = EXAMPLES / "recipe.yaml"
    readme = (REPO / "README.md").read_text()
    block = readme.split("`examples/recipe.yaml` (built by the tests as written):\n\n```yaml\n", 1)[
        1
    ]
    assert block.split("```", 1)[0] == recipe.read_text()
    config = load_config(str(recipe), {"out": str(tmp_path / "recipe")})
    manifest = run_build(config).manifest
    settings = [s.settings for s in manifest.sources]
    assert settings[0] == {"repeat": 2} and settings[1]["take"] == 2
    assert manifest.sources[1].rows_kept == 2 and manifest.sources[3].format == "text"
    check_build(tmp_path / "recipe")


def test_the_readme_qa_text_recipe_is_examples_qa_text_yaml_and_trains_only_answers(tmp_path):
    from tokenizers import Tokenizer

    from sftprep.config import load_config
    from sftprep.pipeline import run_build
    from tests.conftest import REPO

    recipe = EXAMPLES / "qa_text.yaml"
    readme = (REPO / "README.md").read_text()
    block = readme.split("another.\n`examples/qa_text.yaml`:\n\n```yaml\n", 1)[1]
    assert block.split("```", 1)[0] == recipe.read_text()
    run_build(load_config(str(recipe), {"out": str(tmp_path / "qa"), "packing": "none"}))
    check_build(tmp_path / "qa")
    decode = Tokenizer.from_file(str(BUNDLED_TOKENIZER / "tokenizer.json")).decode
    trained = [
        decode([i for i, m in zip(r["input_ids"], r["loss_mask"]) if m])
        for r in sorted(read_rows(tmp_path / "qa"), key=lambda r: r["example_ids"][0])
    ]
    assert trained[0].startswith(" Paris.") and "Question" not in "".join(trained)
    assert " 7." in trained[1] and " 2." in trained[1]


def test_the_readme_reasoning_recipe_is_examples_reasoning_yaml_and_builds(tmp_path):
    from transformers import AutoTokenizer

    from sftprep.config import load_config
    from sftprep.pipeline import run_build
    from tests.conftest import REPO, shared_tokenizer

    folder = shared_tokenizer("qwen3")
    recipe = EXAMPLES / "reasoning.yaml"
    readme = (REPO / "README.md").read_text()
    block = readme.split("`examples/reasoning.yaml`:\n\n```yaml\n", 1)[1]
    assert block.split("```", 1)[0] == recipe.read_text()
    config = load_config(str(recipe), {"out": str(tmp_path / "r"), "packing": "none"})
    assert config.tokenizer == str(folder.resolve()) or config.tokenizer.endswith(
        "tokenizers/qwen3"
    )
    manifest = run_build(config).manifest
    check_build(tmp_path / "r")
    hf = AutoTokenizer.from_pretrained(str(folder))
    start = manifest.sources[0].example_id_start
    first = next(r for r in read_rows(tmp_path / "r") if r["example_ids"][0] == start)
    text = hf.decode(first["input_ids"])
    trained = hf.decode([i for i, m in zip(first["input_ids"], first["loss_mask"]) if m])
    assert "30 + 21 = 51" in text and "30 + 21" not in trained and trained.strip() == "51<|im_end|>"


def test_stats_and_diff_show_what_each_source_asked_and_took(tmp_path):
    from typer.testing import CliRunner

    from sftprep.cli import app

    src = write_jsonl(tmp_path / "d.jsonl", chats(30))
    other = write_jsonl(tmp_path / "o.jsonl", chats(10, "o"))
    build(tmp_path, [other, {"path": src, "take": 5}], name="a")
    build(tmp_path, [other, {"path": src, "take": 8}], name="b")
    runner = CliRunner()
    stats = runner.invoke(
        app, ["stats", str(tmp_path / "a")], terminal_width=250, env={"COLUMNS": "250"}
    )
    assert stats.exit_code == 0 and "take 5" in stats.output and "loss share" in stats.output
    diff = runner.invoke(
        app, ["diff", str(tmp_path / "a"), str(tmp_path / "b")], terminal_width=250
    )
    assert "settings: a: {'take': 5} → b: {'take': 8}" in diff.output
    assert "rows_kept: a: 5 → b: 8" in diff.output and "loss_share" in diff.output
