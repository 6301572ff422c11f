"""The fast encoder (sftprep/stages/fast_encoder.py) gives the HF encoder's ids and masks, byte for
byte, on real tokenizers and data; rows it cannot vouch for go to HF and are counted; a difference
stops the build; tokenizers it cannot encode exactly never use it."""

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from schemas.manifest import read_manifest
from sftprep import build
from sftprep.errors import SftprepError
from sftprep.stages import fast_encoder
from sftprep.stages.fast_batch import FastEncoding, batch_token_ranges
from sftprep.stages.fast_encoder import load_fast_backend
from sftprep.stages.tokenizer import load_tokenizer
from tests.conftest import TOKENIZER_NAMES, shared_data, shared_tokenizer
from tests.sftprep.build_checks import check_build
from tests.sftprep.chat_corpus import chats


def write_sources(folder):
    """Real chats of every structure, Alpaca rows and C4 text: one source of each format."""
    folder.mkdir(exist_ok=True)
    chat = folder / "chats.jsonl"
    rows = [{k: v for k, v in c.items() if k != "kind"} for c in chats(150)]
    chat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [str(chat), str(shared_data("alpaca_en_demo.json")), str(shared_data("c4_demo.jsonl"))]


def built(tmp_path, name, sources, encoder, **extra):
    out = tmp_path / f"{name}-{encoder}"
    build(
        {"sources": sources, "tokenizer": str(shared_tokenizer(name)), "out": str(out),
         "max_length": 1024, "encoder": encoder, "num_proc": 1, "on_error": "skip", **extra}
    )  # fmt: skip
    return out, read_manifest(out)


def shard_bytes(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.arrow"))}


@pytest.mark.parametrize("name", [*TOKENIZER_NAMES, "gptoss"])
def test_fast_and_hf_builds_are_byte_identical(tmp_path, name):
    sources = write_sources(tmp_path / "src")
    fast_out, fast = built(tmp_path, name, sources, "fast")
    hf_out, hf = built(tmp_path, name, sources, "hf")
    assert fast.tokenizer.encoder == "fastokens" and hf.tokenizer.encoder == "hf"
    assert fast.tokenizer.encoder_version and fast.fingerprint != hf.fingerprint
    assert shard_bytes(fast_out) == shard_bytes(hf_out) and shard_bytes(hf_out)
    assert fast.sources == hf.sources and fast.splits == hf.splits
    assert fast.tokenizer.encoder_fallback_rows == fast.tokenizer.encoder_hf_rows == 0
    assert hf.tokenizer.encoder_hf_rows == sum(s.rows_kept for s in hf.sources)
    check_build(fast_out)


def test_token_ranges_equal_hf_offsets_on_random_spans():
    """Masks come from token byte ends: every span maps to the tokens HF's offsets give."""
    from sftprep.stages.masks import token_range

    texts = [json.dumps(c, ensure_ascii=False) for c in chats(60)]
    texts += list(fast_encoder.PROBE_TEXTS)
    rng = np.random.default_rng(0)
    for name in TOKENIZER_NAMES:
        hf = load_tokenizer(str(shared_tokenizer(name))).backend
        backend, why = load_fast_backend(hf, "fast")
        compared = 0
        fast_encoded = backend.encode_batch(texts, add_special_tokens=True)
        hf_encoded = hf.encode_batch(texts, add_special_tokens=True)
        batch_rows, batch_spans, batch_expected = [], [], []
        for text, fast, ref in zip(texts, fast_encoded, hf_encoded):
            if not isinstance(fast, FastEncoding):  # handed to HF, by design only for these:
                # a byte SmolLM2's vocabulary lacks, or non-NFC text for an NFC tokenizer (Qwen3)
                assert "\x13" in text or not unicodedata.is_normalized("NFC", text), (name, text)
                continue
            spans = [(min(a, b), max(a, b)) for a, b in rng.integers(0, len(text) + 1, (20, 2))]
            for a, b in spans:
                assert fast.token_range(a, b) == token_range(ref, a, b), (name, text[a:b])
                compared += a < b
            expected = [found for a, b in spans if (found := token_range(ref, a, b))]
            assert fast.token_ranges(spans) == expected, (name, text)
            batch_rows.append(fast)
            batch_spans.append(spans)
            batch_expected.append(expected)
        assert compared > 1000
        # all rows in one search, as finish_batch asks: the same answer per row
        assert batch_token_ranges(batch_rows, batch_spans) == batch_expected, name
        assert batch_token_ranges(batch_rows[:1], [[]]) == [[]]


def test_batch_token_ranges_on_rows_without_tokens_or_spans():
    """Rows of no tokens (an empty text) and rows without spans keep their places; a span at a
    row's very end or start still maps to that row's tokens only, not its neighbours'."""
    row = FastEncoding(np.array([7, 1, 2, 3], np.int32), np.array([2, 5, 6]), 1, None)
    empty = FastEncoding(np.array([7], np.int32), np.zeros(0, np.int64), 1, None)
    rows = [row, empty, row, row]
    spans = [[(0, 2), (5, 6)], [(0, 0)], [], [(6, 6), (0, 6), (1, 3)]]
    assert batch_token_ranges(rows, spans) == [row.token_ranges(s) for s in spans]
    assert batch_token_ranges(rows, spans)[0] == [(1, 2), (3, 4)]
    assert batch_token_ranges([empty, empty], [[(0, 0)], []]) == [[], []]


def test_the_chunk_check_sends_exactly_the_untrusted_rows_to_hf(monkeypatch):
    """The per-chunk check (cumulative byte sums over the whole chunk) hands to HF exactly the rows
    whose byte lengths do not add up, the non-NFC ones (Qwen3 normalizes to NFC) and the one
    fastokens panics on; every other row keeps fastokens' ids, equal to HF's, and token ends
    that are the cumulative byte lengths of its own tokens only."""
    hf = load_tokenizer(str(shared_tokenizer("qwen3"))).backend
    backend, _ = load_fast_backend(hf, "fast")
    texts = [json.dumps(c, ensure_ascii=False) for c in chats(40)] + list(fast_encoder.PROBE_TEXTS)
    texts += ["Cafe\u0301 decomposed", "boom: this row panics"]
    texts.insert(7, "a zebra in the middle of the chunk")
    victim = hf.encode(texts[7], add_special_tokens=False).ids[1]  # " zebra"
    lengths = backend.byte_lengths.copy()
    lengths[victim] += 1  # a vocabulary entry whose byte length is wrong
    backend.byte_lengths = lengths
    backend.fast = Panicking(backend.fast, "boom")
    backend.first_chunk = False  # the sample compares FastEncodings with HF, checked below anyway
    out = backend.encode_batch(texts, add_special_tokens=False)
    reference = hf.encode_batch(texts, add_special_tokens=False)
    to_hf = {i for i, e in enumerate(out) if not isinstance(e, FastEncoding)}
    expected = {
        i for i, (t, r) in enumerate(zip(texts, reference))
        if victim in r.ids or "boom" in t or not unicodedata.is_normalized("NFC", t)
    }  # fmt: skip
    assert 7 in to_hf and len(texts) - 1 in to_hf and len(texts) - 2 in to_hf
    assert to_hf == expected
    for enc, ref, text in zip(out, reference, texts):
        assert list(enc.ids) == ref.ids
        if isinstance(enc, FastEncoding):
            pieces = [hf.decode([i], skip_special_tokens=False) for i in ref.ids]
            own = np.cumsum([len(p.encode()) for p in pieces]) if pieces else []
            if text.isascii():  # one token per whole byte run: decode gives each token's bytes
                assert list(enc.ends) == list(own)
            assert (enc.ends[-1] if len(enc.ends) else 0) == len(text.encode())


class Panicking:
    """fastokens, but panicking (a BaseException, as a Rust panic is) on texts with `word`."""

    def __init__(self, real, word):
        self.real, self.word = real, word

    def encode_batch_flat(self, texts):
        if any(self.word in t for t in texts):
            raise BaseException("simulated panic")
        return self.real.encode_batch_flat(texts)

    def encode(self, text, add_special_tokens=False):
        if self.word in text:
            raise BaseException("simulated panic")
        return self.real.encode(text, add_special_tokens=add_special_tokens)


def test_rows_the_fast_encoder_cannot_vouch_for_go_to_hf_and_are_counted(tmp_path, monkeypatch):
    import fastokens

    sources = write_sources(tmp_path / "src")
    monkeypatch.setattr(fast_encoder, "_LOADED", {})  # load it again, through the patch
    real = fastokens.Tokenizer.from_json_str
    monkeypatch.setattr(
        fastokens.Tokenizer, "from_json_str", lambda text: Panicking(real(text), "poem")
    )
    fast_out, fast = built(tmp_path, "qwen3", sources, "fast")
    hf_out, _ = built(tmp_path, "qwen3", sources, "hf")
    assert shard_bytes(fast_out) == shard_bytes(hf_out)
    lines = [line for source in sources[::2] for line in Path(source).read_text().splitlines()]
    rows = [json.dumps(r) for r in json.loads(Path(sources[1]).read_text())]
    poems = sum("poem" in row for row in lines + rows)  # rows whose text holds the word
    assert 0 < fast.tokenizer.encoder_fallback_rows == fast.tokenizer.encoder_hf_rows <= poems


def test_a_sampled_row_that_differs_stops_the_build(tmp_path, monkeypatch):
    sources = write_sources(tmp_path / "src")
    real = fast_encoder.FastBackend._batch

    def wrong(self, *args):
        batch = real(self, *args)
        if not self.first_chunk:
            batch.ids = batch.ids.copy()
            for a, b in zip(batch.offsets[:-1], batch.offsets[1:]):
                if b - a > 3:
                    batch.ids[b - 1] = batch.ids[b - 2]  # what a wrong merge would give
        return batch

    monkeypatch.setattr(fast_encoder.FastBackend, "_batch", wrong)
    with pytest.raises(fast_encoder.EncoderMismatch, match="--encoder hf"):
        built(tmp_path, "qwen3", sources, "fast")
    assert not (tmp_path / "qwen3-fast").exists(), "nothing half-written"


@pytest.mark.parametrize("name", ["gemma2", "mistral"])
def test_tokenizers_that_do_not_qualify_use_hf(tmp_path, name):
    src = write_sources(tmp_path / "src")[1:2]
    _, manifest = built(tmp_path, name, src, "auto")
    assert manifest.tokenizer.encoder == "hf"
    with pytest.raises(SftprepError, match="--encoder fast cannot be used: .*byte fallback"):
        built(tmp_path, name, src, "fast", overwrite=True)


def test_qualification_rules():
    base = {
        "model": {"type": "BPE", "byte_fallback": False, "dropout": None},
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel"},
        "added_tokens": [],
    }
    assert fast_encoder.fast_encoder_problem(base) is None
    split = {"type": "Sequence", "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel"}]}
    assert fast_encoder.fast_encoder_problem({**base, "pre_tokenizer": split}) is None
    refused = {
        "unigram": {**base, "model": {"type": "Unigram"}},
        "dropout": {**base, "model": {**base["model"], "dropout": 0.1}},
        "nfkc": {**base, "normalizer": {"type": "NFKC"}},
        "metaspace": {**base, "pre_tokenizer": {"type": "Metaspace"}},
        "normalized added": {
            **base,
            "normalizer": {"type": "NFC"},
            "added_tokens": [{"content": "<x>", "normalized": True}],
        },
    }
    for what, spec in refused.items():
        assert fast_encoder.fast_encoder_problem(spec) is not None, what


def test_a_source_whose_rows_all_go_to_hf_builds_as_with_hf(tmp_path):
    """Every row not NFC (decomposed accents) for Qwen3's NFC normalizer: each goes to HF, the
    build is the HF build, every row counted as a fallback."""
    src = tmp_path / "src" / "nfd.jsonl"
    src.parent.mkdir()
    rows = [{"text": f"Cafe\u0301 {i} na\u0308ive"} for i in range(5)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fast_out, fast = built(tmp_path, "qwen3", [str(src)], "fast")
    hf_out, _ = built(tmp_path, "qwen3", [str(src)], "hf")
    assert shard_bytes(fast_out) == shard_bytes(hf_out)
    assert fast.tokenizer.encoder_fallback_rows == 5
