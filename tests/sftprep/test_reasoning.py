"""reasoning: train | context | drop on the real Qwen3 template, and chat_template_kwargs reaching
the template per source and per row. Ids are checked against transformers' apply_chat_template."""

import json

import pytest

import sftprep
from sftprep.errors import ConfigError, SftprepError
from tests.conftest import BUNDLED_TOKENIZER, shared_tokenizer
from tests.sftprep.build_checks import check_build, read_rows

THOUGHT = "Two plus two: count two more from two, that is four."
FIELD = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4", "reasoning_content": THOUGHT},
]
INLINE = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": f"<think>\n{THOUGHT}\n</think>\n\n4"},
]


def build(tmp_path, name, rows, **config):
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sftprep.build(
        {
            "sources": [str(src)],
            "out": str(tmp_path / name),
            "num_proc": 1,
            "packing": "none",
            **config,
        }
    )
    check_build(tmp_path / name)
    return sorted(read_rows(tmp_path / name), key=lambda r: r["example_ids"][0])


def hf_ids(hf, messages, **kwargs) -> list[int]:
    return list(
        hf.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]
    )


@pytest.mark.parametrize("messages", [FIELD, INLINE], ids=["reasoning_content", "think_block"])
def test_the_three_reasoning_modes_on_qwen3(tmp_path, messages):
    from transformers import AutoTokenizer

    folder = shared_tokenizer("qwen3")
    hf = AutoTokenizer.from_pretrained(str(folder))
    rows = {"messages": messages}

    def trained(row) -> str:
        return hf.decode([i for i, m in zip(row["input_ids"], row["loss_mask"]) if m])

    [train] = build(tmp_path, "train", [rows], tokenizer=str(folder))
    [context] = build(tmp_path, "context", [rows], tokenizer=str(folder), reasoning="context")
    [drop] = build(tmp_path, "drop", [rows], tokenizer=str(folder), reasoning="drop")
    assert list(train["input_ids"]) == hf_ids(hf, messages)
    assert THOUGHT in trained(train) and trained(train).endswith("4<|im_end|>")
    assert list(context["input_ids"]) == list(train["input_ids"]), "context renders the reasoning"
    assert THOUGHT in hf.decode(context["input_ids"]) and THOUGHT not in trained(context)
    assert trained(context).strip() == "4<|im_end|>"
    without = [messages[0], {"role": "assistant", "content": "4"}]
    assert list(drop["input_ids"]) == hf_ids(hf, without)
    assert THOUGHT not in hf.decode(drop["input_ids"]) and trained(drop).strip().endswith(
        "4<|im_end|>"
    )


SHOUT = (
    "{% for m in messages %}{{ m.role }}: {{ m.content | upper if shout else m.content }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def test_chat_template_kwargs_reach_the_template_per_source_and_per_row(tmp_path):
    from tokenizers import Tokenizer

    template = tmp_path / "shout.jinja"
    template.write_text(SHOUT)
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    src = tmp_path / "d.jsonl"
    src.write_text(
        json.dumps({"messages": chat})
        + "\n"
        + json.dumps({"messages": chat, "chat_template_kwargs": {"shout": False}})
        + "\n"
    )
    sftprep.build(
        {
            "sources": [{"path": str(src), "chat_template_kwargs": {"shout": True}}],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "chat_template": str(template),
            "out": str(tmp_path / "o"),
            "num_proc": 1,
            "packing": "none",
        }
    )
    decode = Tokenizer.from_file(str(BUNDLED_TOKENIZER / "tokenizer.json")).decode
    texts = [
        decode(r["input_ids"])
        for r in sorted(read_rows(tmp_path / "o"), key=lambda r: r["example_ids"][0])
    ]
    assert texts[0].startswith("user: HI\nassistant: YO") and texts[1].startswith(
        "user: hi\nassistant: yo"
    )


def test_bad_template_kwargs_are_refused(tmp_path):
    src = tmp_path / "d.jsonl"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    src.write_text(json.dumps({"messages": chat, "chat_template_kwargs": {"messages": []}}) + "\n")
    base = {"tokenizer": str(BUNDLED_TOKENIZER), "num_proc": 1}
    with pytest.raises(
        SftprepError, match=r"row 0: `chat_template_kwargs` holds messages; .*\[bad_field_type\]"
    ):
        sftprep.build({**base, "sources": [str(src)], "out": str(tmp_path / "a")})
    with pytest.raises(
        ConfigError, match=r"sources\[0\] \(.*\): --chat-template-kwargs sets add_generation_prompt"
    ):
        sftprep.build(
            {
                **base,
                "sources": [
                    {"path": str(src), "chat_template_kwargs": {"add_generation_prompt": True}}
                ],
                "out": str(tmp_path / "b"),
            }
        )
    with pytest.raises(
        ConfigError, match=r"reasoning \(--reasoning\): expected one of train, context, drop"
    ):
        sftprep.build(
            {**base, "sources": [str(src)], "out": str(tmp_path / "c"), "reasoning": "hide"}
        )
