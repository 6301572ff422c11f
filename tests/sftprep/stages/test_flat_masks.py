"""A chunk's ids and masks built at once (flat_masks.py) equal the row-by-row rule
(masks.finish_batch) on real tokenizers: random spans, BOS prefixes, a suffix, a text already
beginning with BOS, EOS appended or already there, empty texts, non-ASCII text, rows HF encodes
(the fallback) and bad rows among them."""

import json

import numpy as np
import pytest
from tokenizers.processors import TemplateProcessing

from sftprep.drop_reasons import DropReason
from sftprep.errors import RowError
from sftprep.stages.fast_encoder import load_fast_backend
from sftprep.stages.flat_masks import finish_flat, flat_setting
from sftprep.stages.masks import finish_batch
from sftprep.stages.render import Rendered
from sftprep.stages.tokenizer import load_tokenizer
from tests.conftest import TOKENIZER_NAMES, shared_tokenizer
from tests.sftprep.chat_corpus import chats


def _texts(bos: str, eos: str) -> list[str]:
    texts = [json.dumps(c, ensure_ascii=False)[:300] for c in chats(40)]
    texts += ["", " ", "naïve café 日本語 👩‍👩‍👧", "Cafe\u0301 decomposed (not NFC)"]
    texts += [f"{bos}starts with BOS", f"{bos}{bos}twice", f"ends with EOS{eos}", eos, bos]
    return texts


def _rendered(rng, texts: list[str], add_special: bool) -> list[Rendered]:
    out = []
    for text in texts:
        cuts = sorted(rng.integers(0, len(text) + 1, 2 * int(rng.integers(0, 4))).tolist())
        spans = tuple(zip(cuts[::2], cuts[1::2]))
        if rng.random() < 0.2:
            spans += ((len(text), len(text)),)  # empty, at the end
        out.append(
            Rendered(text, spans, add_special, bool(rng.random() < 0.6), bool(rng.random() < 0.5))
        )
    return out


def _backend(name: str, suffix: bool):
    tokenizer = load_tokenizer(str(shared_tokenizer(name)))
    hf = tokenizer.backend
    bos, eos = tokenizer.special_tokens.get("bos_token"), tokenizer.special_tokens["eos_token"]
    if suffix:  # a post-processor that puts tokens on both sides
        pair = [(bos or eos, hf.token_to_id(bos or eos)), (eos, hf.token_to_id(eos))]
        hf.post_processor = TemplateProcessing(
            single=f"{pair[0][0]} $A {eos}", pair=f"{pair[0][0]} $A {eos} $B", special_tokens=pair
        )
    backend, why = load_fast_backend(hf, "fast")
    assert backend is not None, why
    return backend, tokenizer, bos or "<bos-none>", eos


@pytest.mark.parametrize(
    "name,suffix", [(n, False) for n in TOKENIZER_NAMES] + [("smollm2", True), ("llama3", True)]
)
def test_the_whole_chunk_gives_the_row_by_row_ids_and_masks(name, suffix):
    backend, tokenizer, bos, eos = _backend(name, suffix)
    bos_id, eos_id = tokenizer.token_id("bos_token"), tokenizer.token_id("eos_token")
    texts = _texts(bos, eos)
    rng = np.random.default_rng(len(name) + suffix)
    seen = {"rows": 0, "fallback": 0, "trained": 0, "bos_dropped": 0, "eos_added": 0}
    for add_special in (True, False):
        for special_tokens in (True, False):
            rendered = _rendered(rng, texts, add_special)
            if flat_setting(rendered, special_tokens) is None:
                continue
            backend.first_chunk = True  # every row compared with HF as well
            batch = backend.encode_flat(texts, add_special and special_tokens)
            results = [(2 * k + 1, None) for k in range(len(texts))]  # a bad row before each
            results = [
                pair
                for k, good in enumerate(results)
                for pair in ((2 * k, RowError(DropReason.MALFORMED_JSON, "x")), good)
            ]
            slots = list(range(1, 2 * len(texts), 2))
            packed = finish_flat(
                (results, rendered, slots), batch, (bos_id, eos_id), special_tokens
            )
            expected = finish_batch(
                rendered, [batch.encoding(i) for i in range(len(texts))], bos_id, eos_id,
                special_tokens, fast=True,
            )  # fmt: skip
            got = packed.unpacked()
            assert [i for i, _ in got] == list(range(2 * len(texts)))
            assert all(isinstance(e, RowError) for _, e in got[::2])
            for (_, ours), ref, r in zip(got[1::2], expected, rendered):
                assert ours.input_ids.dtype == ref.input_ids.dtype == np.int32
                assert ours.input_ids.tolist() == ref.input_ids.tolist(), (name, r.text)
                assert ours.loss_mask.tolist() == ref.loss_mask.tolist(), (name, r.text, r.spans)
                assert ours.loss_tokens == ref.loss_tokens and ours.encoded_by == ref.encoded_by
                seen["rows"] += 1
                seen["fallback"] += ours.encoded_by == "hf-fallback"
                seen["trained"] += ours.loss_tokens
            for i, ours in enumerate(e for _, e in got[1::2]):
                encoded = batch.encoding(i).ids
                twice = len(batch.prefix) > 0 and encoded[:2].tolist() == [bos_id, bos_id]
                seen["bos_dropped"] += bool(twice)
                seen["eos_added"] += len(ours.input_ids) > len(encoded) - twice
    assert seen["rows"] >= 2 * len(texts) and seen["trained"] > 500
    assert seen["eos_added"] > 10
    if name == "qwen3":  # NFC: the decomposed row goes to HF
        assert seen["fallback"] > 0
    if name == "llama3":
        assert seen["bos_dropped"] > 0


def test_a_chunk_of_mixed_settings_or_id_markers_goes_row_by_row():
    plain = Rendered("a", ((0, 1),), False, False)
    text = Rendered("a", ((0, 1),), True, True)
    assert flat_setting([plain, plain], True) is False and flat_setting([text], True) is True
    assert flat_setting([text], False) is False
    assert flat_setting([plain, text], True) is None and flat_setting([], True) is None
    marked = Rendered("a", (), False, False, id_markers=((1,), None))
    assert flat_setting([plain, marked], True) is None


def test_a_chunk_whose_rows_all_go_to_hf():
    """Every row HF-encoded (not NFC, for Qwen3's NFC normalizer): nothing left for the flat
    path, the rows come back row by row, in order, among the bad ones."""
    backend, tokenizer, _, _ = _backend("qwen3", False)
    texts = ["Cafe\u0301", "nai\u0308ve"]
    rendered = [Rendered(t, ((0, len(t)),), False, False) for t in texts]
    batch = backend.encode_flat(texts, False)
    assert sorted(batch.fallback) == [0, 1]
    results = [(0, None), (1, RowError(DropReason.MALFORMED_JSON, "x")), (2, None)]
    bos_eos = (tokenizer.token_id("bos_token"), tokenizer.token_id("eos_token"))
    got = finish_flat((results, rendered, [0, 2]), batch, bos_eos, True).unpacked()
    expected = finish_batch(rendered, [batch.encoding(i) for i in range(2)], *bos_eos, True, True)
    assert [i for i, _ in got] == [0, 1, 2] and isinstance(got[1][1], RowError)
    for (_, ours), ref in zip([got[0], got[2]], expected):
        assert ours.encoded_by == ref.encoded_by == "hf-fallback"
        assert ours.input_ids.tolist() == ref.input_ids.tolist()
        assert ours.loss_mask.tolist() == ref.loss_mask.tolist()


def test_span_end_byte_offsets_equal_the_utf8_length_of_the_text_before():
    from sftprep.stages.fast_batch import _span_bytes

    rng = np.random.default_rng(5)
    alphabet = list("ab é日本👩‍🏽\u0301\n")
    for _ in range(200):
        text = "".join(rng.choice(alphabet, int(rng.integers(0, 60))))
        cuts = rng.integers(0, len(text) + 1, (int(rng.integers(1, 30)), 2))
        spans = [(int(min(a, b)), int(max(a, b))) for a, b in cuts]
        places = _span_bytes(text, spans)
        assert places == {p: len(text[:p].encode("utf-8")) for span in spans for p in span}, text


@pytest.mark.parametrize("name", ["qwen3", "llama3"])
def test_small_chunks_of_every_mix_give_the_row_by_row_ids_and_masks(name):
    """Chunks of 1 to 6 rows drawn at random (some all HF fallback for Qwen3's NFC rule, some all
    empty texts, some BOS-led), both special-token settings: flat equals row by row."""
    backend, tokenizer, bos, eos = _backend(name, False)
    bos_eos = (tokenizer.token_id("bos_token"), tokenizer.token_id("eos_token"))
    pool = _texts(bos, eos) + ["Cafe\u0301", "nai\u0308ve", ""]
    rng = np.random.default_rng(7)
    kinds = {"fallback_only": 0, "rows": 0}
    decomposed = ["Cafe\u0301", "nai\u0308ve", "Cafe\u0301 decomposed (not NFC)"]
    for draw in range(150):
        source = decomposed if draw % 10 == 0 else pool  # some chunks HF fallback only (Qwen3)
        texts = [source[i] for i in rng.integers(0, len(source), int(rng.integers(1, 7)))]
        add_special = bool(rng.random() < 0.5)
        rendered = _rendered(rng, texts, add_special)
        batch = backend.encode_flat(texts, add_special)
        slots = list(range(len(texts)))
        packed = finish_flat(([(i, None) for i in slots], rendered, slots), batch, bos_eos, True)
        expected = finish_batch(
            rendered, [batch.encoding(i) for i in slots], *bos_eos, True, fast=True
        )
        for (_, ours), ref in zip(packed.unpacked(), expected):
            assert ours.input_ids.tolist() == ref.input_ids.tolist(), texts
            assert ours.loss_mask.tolist() == ref.loss_mask.tolist(), texts
            assert ours.loss_tokens == ref.loss_tokens and ours.encoded_by == ref.encoded_by
            kinds["rows"] += 1
        kinds["fallback_only"] += len(batch.fallback) == len(texts)
    assert kinds["rows"] > 300
    if name == "qwen3":
        assert kinds["fallback_only"] > 0
