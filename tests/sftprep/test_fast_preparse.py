"""fastokens parses tokenizer.json while the HF tokenizer loads (sftprep/stages/fast_preparse.py):
the build's fast backend is that parse, used only for the tokenizer as shipped, started only for a
build that will encode here or in workers forked from here, once per process; builds are byte-identical either way."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from sftprep import pipeline
from sftprep.config import BuildConfig
from sftprep.pipeline import _parse_early
from sftprep.stages import fast_encoder, fast_preparse
from sftprep.stages.sources import resolve_sources
from sftprep.stages.tokenizer import load_tokenizer
from tests.conftest import BUNDLED_TOKENIZER, REPO, shared_tokenizer

pytest.importorskip("fastokens")


@pytest.fixture
def fresh_process_state(monkeypatch):
    """As in a new process: nothing parsed early, no fast backend loaded."""
    monkeypatch.setattr(fast_preparse, "_STARTED", set())
    monkeypatch.setattr(fast_preparse, "_PARSES", {})
    monkeypatch.setattr(fast_preparse, "_THREADS", [])
    monkeypatch.setattr(fast_encoder, "_LOADED", {})
    monkeypatch.setattr(fast_encoder, "_CONSTRUCTED", {})


def test_the_early_parse_is_the_builds_fast_backend(fresh_process_state):
    fast_preparse.start_parse(str(BUNDLED_TOKENIZER))
    fast_preparse.start_parse(str(BUNDLED_TOKENIZER))  # once per process
    assert len(fast_preparse._PARSES) == 1
    tokenizer = load_tokenizer(str(BUNDLED_TOKENIZER))
    fast_encoder.choose_encoder(tokenizer, "auto")
    slot = tokenizer.fast.parse
    assert slot is not None and not fast_preparse._PARSES, "the parse is handed out once"
    backend = tokenizer.fast.get()
    assert backend is not None and backend.fast is slot["tokenizer"]
    texts = ["Hello, world!", "naïve café 日本語 👍🏽", "  \n\tcode(x)  "]
    ids = [e.ids.tolist() for e in backend.encode_batch(texts, add_special_tokens=False)]
    assert ids == [tokenizer.backend.encode(t, add_special_tokens=False).ids for t in texts]


def test_a_tokenizer_with_added_tokens_parses_its_own(fresh_process_state):
    """chatml adds tokens: the file as shipped is not the build's tokenizer, so its parse is not used."""
    fast_preparse.start_parse(str(BUNDLED_TOKENIZER))
    tokenizer = load_tokenizer(str(BUNDLED_TOKENIZER), "chatml")
    assert tokenizer.added_tokens
    assert fast_preparse.take_parse(tokenizer) is None
    fast_encoder.choose_encoder(tokenizer, "auto")
    backend = tokenizer.fast.get()
    token = tokenizer.added_tokens[0]
    assert backend.encode_batch([f"a{token}b"], add_special_tokens=False)[0].ids.tolist() == (
        tokenizer.backend.encode(f"a{token}b", add_special_tokens=False).ids
    )


def test_no_early_parse_for_a_tokenizer_that_cannot_qualify(fresh_process_state):
    fast_preparse.start_parse(
        str(shared_tokenizer("llama2"))
    )  # SentencePiece-style, not byte-level
    fast_preparse.start_parse(str(REPO / "no-such-folder"))
    assert not fast_preparse._PARSES


def test_only_a_build_that_surely_encodes_parses_early(tmp_path, monkeypatch):
    small = tmp_path / "small.jsonl"
    small.write_text('{"text": "hi"}\n')
    out = tmp_path / "out"
    sources = resolve_sources((str(small),))

    def surely(**changes):
        config = BuildConfig(sources=(str(small),), tokenizer="t", out=str(out), **changes)
        return _parse_early(config, out, sources)

    assert surely()
    assert not surely(encoder="hf")
    assert not surely(chat_template="chatml")
    assert not surely(engine="ray")
    monkeypatch.setattr("sftprep.pipeline._file_bytes", lambda source: 1 << 40)
    monkeypatch.setattr(sys, "platform", "linux")
    assert surely(), "workers forked after the backend is built from the parse"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not surely(), "spawned workers load their own tokenizer"
    monkeypatch.undo()
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    assert not surely(), "a build that may be up to date never pays for the parse"


def test_builds_with_and_without_the_early_parse_are_identical(tmp_path):
    """A fresh --out parses early; an --out holding a build (replaced with --overwrite) does not."""
    source = tmp_path / "chats.jsonl"
    chat = [{"role": "user", "content": "Q ünï 日本"}, {"role": "assistant", "content": "A"}]
    rows = [
        json.dumps({"messages": chat[:1] + [{**chat[1], "content": f"A{i}"}]}) for i in range(300)
    ]
    source.write_text("\n".join(rows) + "\n")
    cli = [sys.executable, "-m", "sftprep.cli", "build", str(source), "--tokenizer"]
    cli += [str(BUNDLED_TOKENIZER), "-q", "--encoder", "fast"]
    early, late = tmp_path / "early", tmp_path / "late"
    subprocess.run(cli + ["--out", str(early)], check=True, cwd=REPO)
    subprocess.run(cli + ["--out", str(late), "--max-length", "512"], check=True, cwd=REPO)
    subprocess.run(cli + ["--out", str(late), "--overwrite"], check=True, cwd=REPO)
    shards = {p.relative_to(early): p.read_bytes() for p in early.rglob("*.arrow")}
    assert shards
    assert shards == {p.relative_to(late): p.read_bytes() for p in late.rglob("*.arrow")}


def test_every_early_parse_has_ended_before_workers_are_forked(fresh_process_state):
    """A parse the build does not use (here: chatml added tokens) may still run in Rust; the pool
    forks only after finish_parses, which waits for it."""
    fast_preparse.start_parse(str(BUNDLED_TOKENIZER))
    tokenizer = load_tokenizer(str(BUNDLED_TOKENIZER), "chatml")
    assert fast_preparse.take_parse(tokenizer) is None and fast_preparse._THREADS
    fast_preparse.finish_parses()
    assert not any(thread.is_alive() for thread in fast_preparse._THREADS)


def test_the_pool_forks_only_after_the_early_parses_ended(monkeypatch):
    calls = []
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(pipeline, "finish_parses", lambda: calls.append("parses ended"))
    monkeypatch.setattr(pipeline, "in_worker_processes", lambda *args: calls.append(args[-1]))
    stats = SimpleNamespace(workers=1, source=SimpleNamespace(path="s.jsonl"))
    pipeline._in_workers(None, SimpleNamespace(fast=None), stats, 2, print, iter(()))
    assert calls == ["parses ended", "fork"] and stats.workers == 2
