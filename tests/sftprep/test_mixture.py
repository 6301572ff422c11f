"""Mixtures chosen once a source is encoded: `take` with `sample: true`, and `mix: tokens` with
per-source weights; hub sources' own load_dataset arguments."""

import json
from collections import Counter

import pytest

from sftprep.errors import ConfigError, SftprepError
from sftprep.tools.verify import verify_build
from tests.sftprep.build_checks import check_build, examples_by_id
from tests.sftprep.test_recipes import build, chats, shard_bytes, write_jsonl
from tests.sftprep.worker_pool import force_worker_pool


def long_chats(n: int, words: int, tag: str) -> list[dict]:
    """Chats whose answers have `words` words: a source with more trained tokens per row."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"{tag} {i}?"},
                {"role": "assistant", "content": " ".join([f"{tag}{i}"] * words)},
            ]
        }
        for i in range(n)
    ]


def rows_of(manifest: dict, index: int, out) -> Counter:
    """How many times each row of source `index` is in the build (copies counted)."""
    source = manifest["sources"][index]
    start, repeat = source["example_id_start"], source["repeat"]
    end = start + source["rows_read"] * repeat
    return Counter((i - start) // repeat for i in examples_by_id(out) if start <= i < end)


def test_a_sample_takes_n_usable_rows_by_seeded_hash_not_the_first(tmp_path):
    rows = chats(60)
    for i in (3, 17, 40):
        rows[i] = {"messages": "not a list"}
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    asked = [{"path": src, "take": 20, "sample": True}]
    manifest = build(tmp_path, asked, name="a", packing="none", on_error="skip")
    source = manifest["sources"][0]
    assert (source["rows_read"], source["rows_kept"], source["examples"]) == (60, 20, 20)
    assert sum(source["dropped"].values()) == 3 and source["rows_unselected"] == 37
    chosen = set(rows_of(manifest, 0, tmp_path / "a"))
    assert len(chosen) == 20 and chosen != set(range(20)) and not chosen & {3, 17, 40}
    assert verify_build(tmp_path / "a") == []
    other = write_jsonl(tmp_path / "o.jsonl", chats(9, "other"))
    mixed = build(tmp_path, [other, *asked], name="b", packing="none", on_error="skip")
    assert set(rows_of(mixed, 1, tmp_path / "b")) == chosen, "adding a source changed the sample"
    reseeded = build(tmp_path, asked, name="c", packing="none", on_error="skip", seed=5)
    assert set(rows_of(reseeded, 0, tmp_path / "c")) != chosen, "the seed decides the sample"
    with pytest.raises(
        SftprepError, match=r"take 58 \(sample\) asks for more rows .* 57 of its 60"
    ):
        build(tmp_path, [{"path": src, "take": 58, "sample": True}], name="d", on_error="skip")
    assert not (tmp_path / "d").exists()


def test_mix_tokens_gives_each_source_its_weighted_share_by_whole_examples(tmp_path):
    short = write_jsonl(tmp_path / "short.jsonl", chats(40))
    long = write_jsonl(tmp_path / "long.jsonl", long_chats(60, 12, "w"))
    alone = build(tmp_path, [short, long], name="plain", packing="none")
    natural = [s["loss_tokens"] for s in alone["sources"]]
    assert natural[0] * 3 < natural[1], "the long source has most trained tokens as read"
    weights = (3, 1)
    sources = [{"path": p, "weight": w} for p, w in zip((short, long), weights)]
    manifest = build(tmp_path, sources, name="mix", packing="none", mix="tokens")
    out = tmp_path / "mix"
    check_build(out)
    assert verify_build(out) == []
    got = [s["loss_tokens"] for s in manifest["sources"]]
    per_row = [n / r for n, r in zip(natural, (40, 60))]
    for have, weight, row in zip(got, weights, per_row):
        target = weight / sum(weights) * sum(natural)
        assert abs(have - target) <= row, (have, target)
    assert abs(sum(got) - sum(natural)) <= max(per_row) * 2, "the split keeps its trained tokens"
    shares = [s["loss_share"] for s in manifest["sources"]]
    assert abs(shares[0] - 0.75) < 0.03 and abs(shares[1] - 0.25) < 0.03
    up, down = rows_of(manifest, 0, out), rows_of(manifest, 1, out)
    factor = got[0] / natural[0]
    assert factor > 2 and set(up) == set(range(40)), "upsampled: every row, whole copies"
    assert set(up.values()) <= {int(factor), int(factor) + 1}
    assert set(down.values()) == {1} and 0 < len(down) < 60, "downsampled: a subset, once each"
    assert manifest["sources"][0]["examples"] == sum(up.values())
    assert manifest["sources"][1]["rows_unselected"] == 60 - len(down)
    examples = examples_by_id(out)
    start, repeat = manifest["sources"][0]["example_id_start"], manifest["sources"][0]["repeat"]
    copies = [
        i for i in examples if start <= i < start + 40 * repeat and (i - start) // repeat == 0
    ]
    assert len(copies) >= 2 and len({json.dumps(examples[i]) for i in copies}) == 1, (
        "copies are the same tokens under ids of their own"
    )


def test_mix_tokens_is_deterministic_for_any_worker_count_and_keeps_copies_together(
    tmp_path, monkeypatch
):
    a = write_jsonl(tmp_path / "a.jsonl", chats(3000))
    b = write_jsonl(tmp_path / "b.jsonl", long_chats(200, 8, "b"))
    sources = [{"path": a, "weight": 1}, {"path": b, "weight": 1}]
    one = build(tmp_path, sources, name="one", mix="tokens", eval_fraction=0.1)
    force_worker_pool(monkeypatch)
    two = build(tmp_path, sources, name="two", mix="tokens", eval_fraction=0.1, num_proc=2)
    assert one["sources"] == two["sources"]
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    b_entry = one["sources"][1]
    assert b_entry["repeat"] >= 2, "b is upsampled"
    start, repeat = b_entry["example_id_start"], b_entry["repeat"]

    def b_rows(split):
        return {
            (i - start) // repeat for i in examples_by_id(tmp_path / "one", split) if i >= start
        }

    assert b_rows("eval") and not b_rows("train") & b_rows("eval"), (
        "a row's copies are never split between train and eval"
    )


@pytest.mark.parametrize(
    "config, says",
    [
        (
            {"sources": [{"path": "d.jsonl", "weight": 2}]},
            r"sources\[0\] \(d.jsonl\): weight needs the global mix: tokens",
        ),
        (
            {"sources": ["d.jsonl"], "mix": "tokens"},
            r"sources\[0\] \(d.jsonl\): mix tokens needs a weight for every source",
        ),
        (
            {"sources": [{"path": "d.jsonl", "take": 3}], "mix": "tokens"},
            r"needs a weight for every source",
        ),
        (
            {"sources": [{"path": "d.jsonl", "weight": 1, "take": 3}], "mix": "tokens"},
            r"take and weight both given",
        ),
        (
            {"sources": [{"path": "d.jsonl", "weight": -1}], "mix": "tokens"},
            r"weight is -1; it must be a positive number",
        ),
        ({"sources": [{"path": "d.jsonl", "sample": True}]}, r"sample goes with take"),
        (
            {"sources": [{"path": "d.jsonl", "take": 2, "sample": "yes"}]},
            r"sample is 'yes'; it must be true or false",
        ),
        (
            {"sources": ["d.jsonl"], "eval_sources": [{"path": "e.jsonl", "weight": 1}]},
            r"eval_sources\[0\] \(e.jsonl\): weight: the eval split is not mixed",
        ),
        (
            {"sources": [{"path": "org/set", "split": 3}]},
            r"sources\[0\] \(org/set\): split is 3; it must be a string",
        ),
        (
            {"sources": [{"path": "org/set", "data_files": {"train": [1]}}]},
            r"data_files is .* give a path",
        ),
        ({"sources": ["d.jsonl"], "mix": "weights"}, r"mix \(--mix\): expected one of"),
    ],
)
def test_bad_mixture_settings_are_one_line_each_naming_the_source_and_key(tmp_path, config, says):
    with pytest.raises(ConfigError, match=says):
        build(tmp_path, **config)
    assert not (tmp_path / "out").exists()


def test_a_weighted_source_with_no_trained_tokens_left_is_refused(tmp_path):
    good = write_jsonl(tmp_path / "g.jsonl", chats(5))
    bad = write_jsonl(tmp_path / "b.jsonl", [{"messages": "no"}] * 4)
    sources = [{"path": good, "weight": 1}, {"path": bad, "weight": 1}]
    with pytest.raises(SftprepError, match=r"b.jsonl: weight 1 asks for a share .* none of its 4"):
        build(tmp_path, sources, mix="tokens", on_error="skip")
    assert not (tmp_path / "out").exists()


def test_hub_sources_pass_their_own_subset_split_revision_and_data_files(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        rows = chats(4, kwargs["split"])
        dataset = datasets.Dataset.from_list(rows)
        return dataset

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    asked = {"name": "en", "split": "test", "revision": "v1", "data_files": {"test": "t.jsonl"}}
    sources = [{"path": "org/set", **asked}, "org/set"]
    manifest = build(tmp_path, sources, packing="none")
    assert ("org/set", asked) in calls and ("org/set", {"split": "train"}) in calls
    assert [s["rows_kept"] for s in manifest["sources"]] == [4, 4], "two splits, two sources"
    one = build(tmp_path, [{"path": "org/set", "split": "test"}], name="one")
    other = build(tmp_path, [{"path": "org/set", "split": "validation"}], name="other")
    assert one["fingerprint"] != other["fingerprint"], "the split is part of what was read"
    local = write_jsonl(tmp_path / "d.jsonl", chats(2))
    with pytest.raises(
        SftprepError, match=r"d.jsonl \(split\): name, split, revision and data_files are for hub"
    ):
        build(tmp_path, [{"path": local, "split": "test"}], name="local")


def test_the_readme_weights_recipe_is_examples_weights_yaml_and_gets_its_shares(tmp_path):
    from sftprep.config import load_config
    from sftprep.pipeline import run_build
    from tests.conftest import EXAMPLES, REPO

    recipe = EXAMPLES / "weights.yaml"
    readme = (REPO / "README.md").read_text()
    block = readme.split("`examples/weights.yaml`\n(built by the tests as written", 1)[1]
    assert block.split("```yaml\n", 1)[1].split("```", 1)[0] == recipe.read_text()
    manifest = run_build(load_config(str(recipe), {"out": str(tmp_path / "w")})).manifest
    check_build(tmp_path / "w")
    shares = [s.loss_share for s in manifest.sources]
    asked = [s.settings["weight"] / 100 for s in manifest.sources]
    assert all(abs(got - want) < 0.05 for got, want in zip(shares, asked)), (shares, asked)
