"""Whole datasets from ../shared/assets, converted to each format, built with each real tokenizer:
ids must equal the tokenizer's own output for 100% of examples, and masks must agree with TRL's
`{% generation %}` templates on every token that is not pure whitespace."""

import json
from pathlib import Path

import pytest

import sftprep
from tests.conftest import (
    TOKENIZER_NAMES,
    hf_tokenizer,
    shared_data,
    shared_tokenizer,
    trl_template,
)
from tests.sftprep.build_checks import check_build, examples_by_id, load_manifest

TRAINING_TEMPLATES = {
    "smollm2": "qwen2_5_training",
    "qwen3": "qwen3_training",
    "llama3": "llama3_training",
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
        },
    }
]


def _alpaca():
    return json.loads(shared_data("alpaca_en_demo.json").read_text())


def _prompt(row):
    return row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")


def conversations(with_tools: bool) -> list[list[dict]]:
    """Single-turn chats from every Alpaca and identity row, plus multi-turn chats made of three rows
    each (every other one with a system turn, and with tools a tool-call round trip)."""
    rows = _alpaca()
    ident = json.loads(shared_data("identity.json").read_text())
    convs = [
        [{"role": "user", "content": _prompt(r)}, {"role": "assistant", "content": r["output"]}]
        for r in rows + ident
    ]
    for k in range(0, len(rows) - 2, 3):
        conv = [{"role": "system", "content": "You are helpful."}] if k % 2 else []
        for j, r in enumerate(rows[k : k + 3]):
            conv.append({"role": "user", "content": _prompt(r)})
            if with_tools and j == 1:
                conv.append(
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "type": "function",
                                "function": {
                                    "name": "lookup",
                                    "arguments": {"word": r["instruction"][:20]},
                                },
                            }
                        ],
                    }
                )
                conv.append({"role": "tool", "content": r["instruction"][::-1]})
            conv.append({"role": "assistant", "content": r["output"]})
        convs.append(conv)
    return convs


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _build(tmp_path, source, tokenizer, **config):
    out = tmp_path / "build"
    sftprep.build(
        {
            "sources": [str(source)],
            "tokenizer": str(tokenizer),
            "out": str(out),
            "packing": "none",
            "max_length": 65536,
            "num_proc": 1,
            **config,
        }
    )
    check_build(out)
    return out


def _nonspace(text: str) -> str:
    return "".join(text.split())


def _expected_trained_text(name: str, conv: list[dict]) -> str:
    """What each family's own template trains, written from the template by hand (independent of sftprep)."""
    assistants = [i for i, m in enumerate(conv) if m["role"] == "assistant"]
    last_user = max(i for i, m in enumerate(conv) if m["role"] == "user")
    parts = []
    for i in assistants:
        content = conv[i]["content"]
        if name == "smollm2":
            parts.append(content + "<|im_end|>")
        elif name == "llama3":
            parts.append(content.strip() + "<|eot_id|>")
        else:  # qwen3: only turns after the last user query carry a (here empty) thinking block
            parts.append(("<think></think>" if i > last_user else "") + content + "<|im_end|>")
    return "".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_chat_ids_equal_apply_chat_template_and_masks_cover_assistant_turns(tmp_path, name):
    tokenizer = shared_tokenizer(name)
    convs = conversations(with_tools=False)
    out = _build(
        tmp_path, _write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in convs]), tokenizer
    )
    hf = hf_tokenizer(str(tokenizer))
    built = examples_by_id(out)
    assert len(built) == len(convs) and load_manifest(out)["dropped"] == {}
    for example_id, conv in enumerate(convs):
        ids, mask = built[example_id]
        assert ids == hf.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"], (
            example_id
        )
        trained = hf.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)
        assert _nonspace(trained) == _nonspace(_expected_trained_text(name, conv)), example_id


@pytest.mark.slow
@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_masks_agree_with_trl_generation_templates(tmp_path, name):
    tokenizer = shared_tokenizer(name)
    template = trl_template(TRAINING_TEMPLATES[name])
    tools = name != "llama3"  # TRL's llama3 training template has no tool support
    convs = conversations(with_tools=tools)
    rows = [
        {"messages": c, "tools": TOOLS} if tools and len(c) > 4 else {"messages": c} for c in convs
    ]
    out = _build(
        tmp_path,
        _write_jsonl(tmp_path / "chat.jsonl", rows),
        tokenizer,
        chat_template=str(template),
    )
    hf = hf_tokenizer(str(tokenizer), str(template))
    built = examples_by_id(out)
    assert len(built) == len(rows)
    disagreements = 0
    for example_id, row in enumerate(rows):
        ids, mask = built[example_id]
        ref = hf.apply_chat_template(
            row["messages"],
            tools=row.get("tools"),
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        assert ids == ref["input_ids"], example_id
        assert sum(ref["assistant_masks"]) > 0
        for pos, (ours, theirs) in enumerate(zip(mask, ref["assistant_masks"])):
            if pos and ours != theirs and hf.decode([ids[pos]]).strip():
                disagreements += 1
    assert disagreements == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_text_ids_are_tokenizer_output_plus_one_eos(tmp_path, name):
    tokenizer = shared_tokenizer(name)
    texts = [
        json.loads(line)["text"] for line in shared_data("c4_demo.jsonl").read_text().splitlines()
    ]
    out = _build(tmp_path, shared_data("c4_demo.jsonl"), tokenizer)
    hf = hf_tokenizer(str(tokenizer))
    built = examples_by_id(out)
    assert len(built) == len(texts)
    for example_id, text in enumerate(texts):
        ids, mask = built[example_id]
        ref = hf(text)["input_ids"]
        assert ids == ref + [hf.eos_token_id], example_id
        assert ids.count(hf.eos_token_id) == 1 and (
            hf.bos_token_id is None or ids.count(hf.bos_token_id) <= 1
        )
        assert mask == [0] + [1] * (len(ids) - 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_prompt_completion_ids_and_completion_only_mask(tmp_path, name):
    tokenizer = shared_tokenizer(name)
    rows = [
        {"prompt": _prompt(r) + "\n\nAnswer:", "completion": " " + r["output"]} for r in _alpaca()
    ]
    out = _build(tmp_path, _write_jsonl(tmp_path / "pc.jsonl", rows), tokenizer)
    hf = hf_tokenizer(str(tokenizer))
    built = examples_by_id(out)
    for example_id, row in enumerate(rows):
        ids, mask = built[example_id]
        assert ids == hf(row["prompt"] + row["completion"])["input_ids"] + [hf.eos_token_id], (
            example_id
        )
        trained = hf.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)
        assert _nonspace(trained) == _nonspace(row["completion"] + hf.eos_token), example_id
        prompt_len = len(hf(row["prompt"])["input_ids"])
        assert not any(mask[: prompt_len - 1]), "prompt tokens must not be trained"
