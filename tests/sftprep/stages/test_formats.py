"""Format detection and normalization: every alias, every field name flag, and the custom formats."""

import json

import pytest

import sftprep
from sftprep.config import BuildConfig
from sftprep.errors import RowError, SftprepError
from sftprep.stages.formats import detect_format, make_normalizer
from tests.conftest import BUNDLED_TOKENIZER, hf_tokenizer
from tests.sftprep.build_checks import check_build, examples_by_id, load_manifest


def cfg(**kw) -> BuildConfig:
    return BuildConfig(sources=("x",), tokenizer="t", out="o", **kw)


def normalize(row: dict, **kw):
    return make_normalizer(detect_format(list(row), cfg(**kw), "src"))(row)


@pytest.mark.parametrize(
    "row, name",
    [
        ({"text": "hi"}, "text"),
        ({"messages": [{"role": "user", "content": "a"}]}, "messages"),
        ({"conversations": [{"from": "human", "value": "a"}]}, "sharegpt"),
        ({"prompt": "a", "completion": "b"}, "prompt-completion"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
    ],
)
def test_detects_each_format_from_its_columns(row, name):
    assert detect_format(list(row), cfg(), "src").name == name


def test_field_name_flags_pick_custom_columns():
    assert detect_format(["body"], cfg(text_field="body"), "s").fields == {"text": "body"}
    assert detect_format(["chat"], cfg(messages_field="chat"), "s").name == "messages"
    spec = detect_format(["q", "a"], cfg(prompt_field="q", completion_field="a"), "s")
    assert spec.name == "prompt-completion" and spec.fields["prompt"] == "q"


def test_undetectable_columns_name_the_source_columns_and_flags():
    with pytest.raises(SftprepError) as err:
        detect_format(["question", "answer"], cfg(), "data/qa.jsonl")
    text = str(err.value)
    assert "data/qa.jsonl" in text and "answer, question" in text and "--prompt-template" in text


def test_forced_format_must_find_its_columns():
    with pytest.raises(SftprepError, match="--format text"):
        detect_format(["messages"], cfg(format="text"), "s")


def test_sharegpt_roles_are_mapped():
    ex = normalize(
        {
            "conversations": [
                {"from": "system", "value": "s"},
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "a"},
                {"from": "observation", "value": "o"},
            ]
        }
    )
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant", "tool"]
    assert [m["content"] for m in ex.messages] == ["s", "q", "a", "o"]


def test_unknown_role_is_a_row_error_with_a_fix():
    with pytest.raises(RowError) as err:
        normalize({"messages": [{"role": "narrator", "content": "x"}]})
    assert err.value.reason == "unknown_role" and "narrator" in str(err.value)


def test_openai_content_parts_are_joined():
    ex = normalize(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ]
        }
    )
    assert ex.messages[0]["content"] == "ab"
    with pytest.raises(RowError, match="image_url"):
        normalize(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}
        )


def test_tool_calls_are_checked_and_kept():
    call = {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
    ex = normalize(
        {
            "messages": [{"role": "assistant", "content": None, "tool_calls": [call]}],
            "tools": json.dumps([{"type": "function", "function": {"name": "f"}}]),
        }
    )
    assert (
        ex.messages[0]["tool_calls"] == [call]
        and "content" not in ex.messages[0]  # as apply_chat_template passes it: no key, never ""
        and ex.tools[0]["function"]["name"] == "f"
    )
    with pytest.raises(RowError) as err:
        normalize(
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": "x",
                        "tool_calls": [{"function": {"arguments": {}}}],
                    }
                ]
            }
        )
    assert err.value.reason == "bad_tool_calls"


def test_alpaca_becomes_a_prompt_completion_chat():
    ex = normalize({"instruction": "Do", "input": "this", "output": "done", "system": "sys"})
    assert ex.kind == "chat" and ex.prompt_messages == 2
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant"]
    assert ex.messages[1]["content"] == "Do\n\nthis" and ex.messages[2]["content"] == "done"


def test_prompt_completion_strings_and_message_lists():
    assert normalize({"prompt": "a", "completion": "b"}).kind == "completion"
    ex = normalize(
        {
            "prompt": [{"role": "user", "content": "q"}],
            "completion": [{"role": "assistant", "content": "a"}],
        }
    )
    assert ex.kind == "chat" and ex.prompt_messages == 1


def test_prompt_template_formats_any_columns():
    ex = normalize(
        {"question": "Why?", "answer": "Because."},
        prompt_template="### Q: {question}\n### A:",
        completion_template=" {answer}",
    )
    assert (ex.kind, ex.prompt, ex.completion) == ("completion", "### Q: Why?\n### A:", " Because.")
    with pytest.raises(RowError, match="answer"):
        normalize(
            {"question": "Why?"}, prompt_template="{question}", completion_template="{answer}"
        )


def test_formatter_function_may_return_text_pairs_or_messages(tmp_path, monkeypatch):
    (tmp_path / "my_fmt.py").write_text(
        "def as_text(row):\n    return row['a'] + row['b']\n"
        "def as_pair(row):\n    return {'prompt': row['a'], 'completion': row['b']}\n"
        "def as_chat(row):\n    return [{'role': 'user', 'content': row['a']}, {'role': 'assistant', 'content': row['b']}]\n"
    )
    monkeypatch.chdir(tmp_path)
    row = {"a": "x", "b": "y"}
    assert normalize(row, formatter="my_fmt:as_text").text == "xy"
    assert normalize(row, formatter="my_fmt:as_pair").completion == "y"
    assert normalize(row, formatter="my_fmt:as_chat").messages[1]["role"] == "assistant"
    with pytest.raises(SftprepError, match="no function"):
        normalize(row, formatter="my_fmt:missing")


def _chat_rows():
    return [
        {
            "messages": [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a2"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1", "train": False},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a2"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "q1", "train": True},
                {"role": "assistant", "content": "a1"},
            ]
        },
    ]


def _trained_texts(tmp_path, rows, **kw):
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / f"b-{len(list(tmp_path.iterdir()))}"
    sftprep.build(
        {
            "sources": [str(src)],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(out),
            "packing": "none",
            "num_proc": 1,
            **kw,
        }
    )
    check_build(out)
    hf = hf_tokenizer(str(BUNDLED_TOKENIZER))
    return {
        i: hf.decode([t for t, m in zip(*pair) if m]) for i, pair in examples_by_id(out).items()
    }, load_manifest(out)


def test_loss_policies_and_per_message_train_flags(tmp_path):
    assistant, _ = _trained_texts(tmp_path, _chat_rows(), loss_on="assistant")
    assert assistant[0] == "a1<|im_end|>a2<|im_end|>"
    assert assistant[1] == "a2<|im_end|>", "train: false removes that turn"
    assert assistant[2] == "q1<|im_end|>a1<|im_end|>", (
        "train: true on a user turn trains its content and end token"
    )
    last, _ = _trained_texts(tmp_path, _chat_rows(), loss_on="last-assistant")
    assert last[0] == "a2<|im_end|>"
    everything, _ = _trained_texts(tmp_path, _chat_rows(), loss_on="all")
    hf = hf_tokenizer(str(BUNDLED_TOKENIZER))
    full = hf.apply_chat_template(_chat_rows()[0]["messages"], tokenize=False)
    assert everything[0] == hf.decode(hf(full, add_special_tokens=False)["input_ids"][1:])
    assert "a1" not in everything[1], "train: false also holds under --loss-on all"


def test_example_without_trainable_tokens_is_dropped_and_counted(tmp_path):
    rows = _chat_rows()[:1] + [
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "train": False},
            ]
        }
    ]
    texts, manifest = _trained_texts(tmp_path, rows)
    assert list(texts) == [0]
    assert manifest["dropped"] == {"no_loss_tokens": 1} and manifest["sources"][0]["rows_read"] == 2
