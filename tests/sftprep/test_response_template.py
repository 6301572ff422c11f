"""response_template / instruction_template on pre-formatted text: the trained tokens are those
overlapping the characters after each response marker (up to the next instruction marker), checked
against an independent character-level reference and transformers' own ids and offsets, on
tokenizers where the marker tokenizes differently in context (Llama-2: "###" alone is not "###"
after a newline, TRL's "Could not find response key")."""

import json

import pytest

import sftprep
from sftprep.errors import ConfigError, SftprepError
from tests.conftest import BUNDLED_TOKENIZER, shared_tokenizer
from tests.sftprep.build_checks import check_build, load_manifest, read_rows

RESPONSE, INSTRUCTION = "### Answer:", "### Question:"
TEXTS = [
    "### Question: What is 2+2?\n### Answer: 4",
    "### Question: Hi?\n### Answer: Hello.\n### Question: Bye?\n### Answer: Goodbye!",
    "Preamble.\n### Question: a\n### Answer:",  # an empty last answer
    "### Question: x\n### Answer: y\n### Question: no answer yet",
]


def reference_mask(text: str, instruction: str | None) -> tuple[list[bool], bool]:
    """Which characters train, by a scan written apart from response_spans.py: a state that turns
    on after a response marker and off at an instruction marker (or only the last response);
    and whether the state is still on at the end (then the appended EOS trains, as in TRL, even
    after an empty answer)."""
    trained, on, i = [False] * len(text), False, 0
    while i < len(text):
        if text.startswith(RESPONSE, i):
            if instruction is None:
                trained = [False] * len(text)  # only the last response counts
            on, i = True, i + len(RESPONSE)
            continue
        if instruction is not None and on and text.startswith(instruction, i):
            on = False
        trained[i] = on
        i += 1
    return trained, on


def expected(hf, text: str, instruction: str | None):
    enc = hf(text, return_offsets_mapping=True)
    chars, eos = reference_mask(text, instruction)
    mask = [int(any(chars[a:b])) for a, b in enc["offset_mapping"]]
    ids = list(enc["input_ids"])
    if ids[-1] != hf.eos_token_id:
        ids.append(hf.eos_token_id)
        mask.append(int(eos))
    mask[0] = 0
    return ids, mask


def build(tmp_path, texts, **config):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return sftprep.build(
        {
            "sources": [str(src)],
            "out": str(tmp_path / "out"),
            "num_proc": 1,
            "packing": "none",
            **config,
        }
    )


@pytest.mark.parametrize("name", ["llama2", "smollm2", "llama3"])
@pytest.mark.parametrize("instruction", [INSTRUCTION, None])
def test_masks_equal_an_independent_character_reference(tmp_path, name, instruction):
    from transformers import AutoTokenizer

    folder = shared_tokenizer(name)
    hf = AutoTokenizer.from_pretrained(str(folder))
    texts = TEXTS if instruction else TEXTS[:3]
    config = {"tokenizer": str(folder), "response_template": RESPONSE}
    if instruction:
        config["instruction_template"] = instruction
    manifest = build(tmp_path, texts, **config)
    assert manifest["dropped"] == {}
    check_build(tmp_path / "out")
    rows = sorted(read_rows(tmp_path / "out"), key=lambda r: r["example_ids"][0])
    for text, row in zip(texts, rows, strict=True):
        ids, mask = expected(hf, text, instruction)
        assert list(row["input_ids"]) == ids, text
        assert list(row["loss_mask"]) == mask, text
    trained = sum(sum(r["loss_mask"]) for r in rows)
    assert 0 < trained < sum(len(r["loss_mask"]) for r in rows), "neither nothing nor everything"


def test_a_text_without_the_marker_is_a_row_error_or_a_counted_drop(tmp_path):
    texts = [TEXTS[0], "no marker here"]
    with pytest.raises(
        SftprepError,
        match=r"row 1: the response template '### Answer:' is not in the text.*no_response_template",
    ):
        build(tmp_path, texts, tokenizer=str(BUNDLED_TOKENIZER), response_template=RESPONSE)
    manifest = build(
        tmp_path,
        texts,
        tokenizer=str(BUNDLED_TOKENIZER),
        response_template=RESPONSE,
        on_error="skip",
    )
    assert manifest["dropped"] == {"no_response_template": 1}


def test_per_source_response_templates_and_bad_settings(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"text": "Q: a\nA: b"}) + "\n")
    chat = tmp_path / "c.jsonl"
    chat.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        )
        + "\n"
    )
    base = {"tokenizer": str(BUNDLED_TOKENIZER), "num_proc": 1}
    manifest = sftprep.build(
        {
            **base,
            "sources": [str(chat), {"path": str(src), "response_template": "A:"}],
            "out": str(tmp_path / "o"),
        }
    )
    assert manifest["sources"][1]["settings"] == {"response_template": "A:"}
    with pytest.raises(
        SftprepError, match="response_template applies to text, but this source is messages"
    ):
        sftprep.build(
            {
                **base,
                "sources": [{"path": str(chat), "response_template": "A:"}],
                "out": str(tmp_path / "p"),
            }
        )
    with pytest.raises(ConfigError, match="--instruction-template needs --response-template"):
        sftprep.build(
            {
                **base,
                "sources": [str(src)],
                "out": str(tmp_path / "q"),
                "instruction_template": "Q:",
            }
        )
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()
    assert load_manifest(tmp_path / "o")["dropped"] == {}


def in_context_ids(hf, text: str, marker: str) -> list[int]:
    """The ids of the tokens covering the first `marker` in `text`, as a TRL user would copy them
    from a tokenized training example."""
    enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
    at = text.index(marker)
    return [
        i
        for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])
        if a < at + len(marker) and b > at
    ]


def reference_id_mask(ids: list[int], response: list[int], instruction: list[int]) -> tuple:
    """Which tokens train, by a token-by-token scan written apart from response_spans.id_spans;
    and whether the state is still on at the end (then an appended EOS trains)."""
    trained, on, i = [0] * len(ids), False, 0
    while i < len(ids):
        if ids[i : i + len(response)] == response:
            if not instruction:
                trained = [0] * len(ids)
            on, i = True, i + len(response)
            continue
        if instruction and on and ids[i : i + len(instruction)] == instruction:
            on = False
        trained[i] = int(on)
        i += 1
    return trained, on


@pytest.mark.parametrize("name", ["llama2", "smollm2", "llama3"])
@pytest.mark.parametrize("multi_turn", [True, False])
def test_id_markers_equal_an_independent_token_reference(tmp_path, name, multi_turn):
    from transformers import AutoTokenizer

    folder = shared_tokenizer(name)
    hf = AutoTokenizer.from_pretrained(str(folder))
    response = in_context_ids(hf, TEXTS[1], RESPONSE)
    instruction = in_context_ids(hf, TEXTS[1], "\n" + INSTRUCTION)[1:] if multi_turn else []
    config = {"tokenizer": str(folder), "response_template_ids": response}
    if instruction:
        config["instruction_template_ids"] = instruction
    texts = TEXTS[:3]
    manifest = build(tmp_path, texts, **config)
    assert manifest["dropped"] == {}
    rows = sorted(read_rows(tmp_path / "out"), key=lambda r: r["example_ids"][0])
    for text, row in zip(texts, rows, strict=True):
        ids = list(hf(text)["input_ids"])
        mask, on_at_end = reference_id_mask(ids, response, instruction)
        if ids[-1] != hf.eos_token_id:
            ids, mask = [*ids, hf.eos_token_id], [*mask, int(on_at_end)]
        mask[0] = 0
        assert list(row["input_ids"]) == ids and list(row["loss_mask"]) == mask, text
        assert 0 < sum(mask) < len(mask)


def test_id_markers_missing_and_misused_are_named(tmp_path):
    base = {"tokenizer": str(BUNDLED_TOKENIZER)}
    with pytest.raises(SftprepError, match=r"row 0: the response template \[1, 2, 3\] .* on ids"):
        build(tmp_path, [TEXTS[0]], response_template_ids=[1, 2, 3], **base)
    with pytest.raises(ConfigError, match="--response-template and --response-template-ids both"):
        build(tmp_path, [TEXTS[0]], response_template_ids=[1], response_template="A", **base)
    with pytest.raises(
        ConfigError, match="--instruction-template-ids needs --response-template-ids"
    ):
        build(tmp_path, [TEXTS[0]], instruction_template_ids=[1], **base)
    assert not (tmp_path / "out").exists()
