"""The manifest says how each conversation's turns were located (SourceEntry.turns_located_by):
every encoded conversation counted once, under the way that located it; the label follows the
way actually taken (turning one way off moves the rows to the next, spans unchanged); sources
without conversations count none."""

import json

import pytest

from schemas.manifest import read_manifest
from sftprep import build, pipeline
from sftprep.drop_reasons import DropReason
from sftprep.stages import render
from sftprep.stages.chat_template import compile_template
from sftprep.stages.formats import Example, normalize_messages
from sftprep.stages.render import LOCATED_BY, render_example
from sftprep.stages.tokenizer import load_tokenizer
from sftprep.tools.stats import source_table
from tests.conftest import shared_data, shared_tokenizer
from tests.sftprep.chat_corpus import chats

LENGTH_POLICY = {DropReason.NO_LOSS_TOKENS.value, DropReason.TOO_LONG.value}
"""Reasons a row is dropped after it was encoded (its turns located, so counted)."""


def _examples(count: int) -> list[Example]:
    return [
        Example("chat", messages=normalize_messages(c["messages"]), tools=c.get("tools"))
        for c in chats(count)
    ]


def _ways(name: str, examples: list[Example], renderer: str = "auto") -> list:
    """Per example: (located_by, spans) under the tokenizer's own template, or the RowError's reason."""
    tokenizer = load_tokenizer(str(shared_tokenizer(name)), None, None)
    template = compile_template(tokenizer.chat_template, 7.5, 64, renderer)
    out = []
    for example in examples:
        try:
            rendered = render_example(example, "assistant", template, tokenizer.special_tokens)
            out.append((rendered.located_by, rendered.spans))
        except render.RowError as err:
            out.append(err.reason)
    return out


def _labels(results: list) -> set:
    return {r[0] for r in results if isinstance(r, tuple)}


def _spans(results: list) -> list:
    return [r[1] if isinstance(r, tuple) else r for r in results]


def test_each_label_is_the_way_taken_and_turning_it_off_moves_rows_to_the_next(monkeypatch):
    examples = _examples(120)
    stepped = _ways("qwen3", examples)
    assert "loop-steps" in _labels(stepped) and _labels(stepped) <= set(LOCATED_BY)

    monkeypatch.setattr(render, "_spans_by_steps", lambda *args: None)
    twin = _ways("qwen3", examples, renderer="auto")  # prefixes by minijinja (Qwen3's is VETTED)
    assert _labels(twin) == {"every-prefix"}
    assert _spans(twin) == _spans(stepped), "the same spans however they were located"

    monkeypatch.setattr(render, "row_twin", lambda *args: None)
    exact = _ways("qwen3", examples)  # prefixes by Jinja2: the same way, the same label
    assert _labels(exact) == {"every-prefix"} and _spans(exact) == _spans(stepped)


def test_a_prefix_local_template_is_located_by_one_render_until_its_layout_is_refused(
    monkeypatch,
):
    examples = _examples(60)
    one = _ways("smollm2", examples)
    assert "one-render" in _labels(one)
    monkeypatch.setattr(render, "layout_of", lambda *args: None)
    prefixes = _ways("smollm2", examples)
    assert _labels(prefixes) == {"every-prefix"} and _spans(prefixes) == _spans(one)


def _build(tmp_path, name: str, num_proc: int, edit=None, **extra):
    """Build the corpus chats (each row through `edit` first) and C4 text; the manifest."""
    folder = tmp_path / "src"
    folder.mkdir(parents=True, exist_ok=True)
    chat = folder / "chats.jsonl"
    rows = [{k: v for k, v in c.items() if k != "kind"} for c in chats(150)]
    rows = [edit(i, r) for i, r in enumerate(rows)] if edit else rows
    chat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sources = [str(chat), str(shared_data("c4_demo.jsonl"))]
    out = tmp_path / f"{name}-{num_proc}-{len(extra)}"
    build(
        {"sources": sources, "tokenizer": str(shared_tokenizer(name)), "out": str(out),
         "max_length": 512, "num_proc": num_proc, "on_error": "skip", **extra}
    )  # fmt: skip
    return read_manifest(out)


@pytest.mark.parametrize(("name", "num_proc", "extra", "way"), [
    ("qwen3", 1, {}, "loop-steps"),
    ("qwen3", 2, {"renderer": "jinja2"}, "every-prefix"),
    ("smollm2", 2, {}, "one-render"),
])  # fmt: skip
def test_the_manifest_counts_every_encoded_conversation_once(tmp_path, name, num_proc, extra, way):
    manifest = _build(tmp_path, name, num_proc, **extra)
    chats_source, text = manifest.sources
    located = chats_source.turns_located_by
    encoded = chats_source.rows_kept + sum(
        n for reason, n in chats_source.dropped.items() if reason in LENGTH_POLICY
    )
    assert sum(located.values()) == encoded > 0
    assert way in located and set(located) <= set(LOCATED_BY)
    assert text.turns_located_by == {} and text.rows_kept > 0  # plain text: no turns
    assert "turns located by" in [c.header for c in source_table(manifest).columns]


def _first_untrained_with_kwargs(i: int, row: dict) -> dict:
    """The row with its first message `train: false` (so `loss_on: all` has a turn to locate) and
    template kwargs of its own: more sets of them than a process keeps minijinja renderers for
    (fast_render.TWINS_KEPT), so whether minijinja or Jinja2 renders a row's prefixes depends on
    the rows its process met before."""
    messages = [{**row["messages"][0], "train": False}, *row["messages"][1:]]
    return {**row, "messages": messages, "chat_template_kwargs": {"tag": i % 40}}


@pytest.mark.parametrize("edit", [None, _first_untrained_with_kwargs])
def test_workers_and_one_process_count_alike(tmp_path, monkeypatch, edit):
    extra = {"loss_on": "all"} if edit else {}
    one = _build(tmp_path, "qwen3", 1, edit, **extra)
    monkeypatch.setattr(pipeline, "WORKER_CHUNK_BYTES", (8192, 8192))  # a file of many chunks
    monkeypatch.setattr(pipeline, "CHUNK_ROWS", 16)
    two = _build(tmp_path, "qwen3", 2, edit, **extra)
    assert two.workers == 2 and one.workers == 1
    assert one.sources == two.sources and one.sources[0].turns_located_by


def test_loss_on_all_counts_only_rows_with_a_turn_to_locate(tmp_path):
    def untrained_first_of_half(i, row):
        if i % 2:
            return row
        return {**row, "messages": [{**row["messages"][0], "train": False}, *row["messages"][1:]]}

    plain = _build(tmp_path, "qwen3", 1, loss_on="all").sources[0]
    assert plain.turns_located_by == {} and plain.rows_kept > 0  # the whole text trains
    half = _build(tmp_path / "half", "qwen3", 1, untrained_first_of_half, loss_on="all").sources[0]
    assert 0 < sum(half.turns_located_by.values()) <= (half.rows_read + 1) // 2
