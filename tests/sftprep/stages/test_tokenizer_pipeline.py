"""The tokenizer as transformers 5 loads it: the SentencePiece Llama/Gemma rebuilds, mirrored
without transformers, against transformers itself (the independent reference)."""

import json

import pytest

import sftprep
from sftprep.stages.tokenizer import load_tokenizer
from tests.conftest import hf_tokenizer, shared_tokenizer

# text right after a special token that starts with a space: where tokenizer.json as shipped
# and transformers 5 part (an extra "▁")
TEXTS = ["a</s> b", "<s>[INST] hi [/INST] yes</s>", "  two</s>  spaces \t tab", " lead", "x\n\n  y"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, pipeline",
    [
        ("mistral", "transformers-5:LlamaTokenizer(metaspace=always)"),
        ("llama2", "transformers-5:LlamaTokenizer(metaspace=always)"),
        ("gemma2", "transformers-5:GemmaTokenizer"),
        ("deepseek_v3", "tokenizer.json"),  # names LlamaTokenizerFast but is byte-level
        ("qwen3", "tokenizer.json"),
    ],
)
def test_ids_equal_transformers_and_the_pipeline_is_named(name, pipeline):
    path = shared_tokenizer(name)
    ours, hf = load_tokenizer(str(path)), hf_tokenizer(str(path))
    assert ours.pipeline == pipeline
    for text in TEXTS:
        for special in (True, False):
            expected = hf(text, add_special_tokens=special)["input_ids"]
            assert ours.backend.encode(text, add_special_tokens=special).ids == expected, text


def test_the_shipped_file_alone_would_differ():
    """Not vacuous: tokenizer.json as shipped gives another id sequence for the first text."""
    from tokenizers import Tokenizer

    path = shared_tokenizer("mistral")
    shipped = Tokenizer.from_file(str(path / "tokenizer.json"))
    ours = load_tokenizer(str(path))
    text = TEXTS[0]
    shipped_ids = shipped.encode(text, add_special_tokens=False).ids
    assert shipped_ids != ours.backend.encode(text, add_special_tokens=False).ids


def test_the_manifest_records_the_pipeline_and_the_template_date(tmp_path):
    source = tmp_path / "chat.jsonl"
    source.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Yo"},
                ]
            }
        )
        + "\n"
    )
    dated = tmp_path / "dated.jinja"
    dated.write_text(
        "{{ strftime_now('%Y-%m-%d') }}{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )

    def build(out, **config):
        return sftprep.build(
            {
                "sources": [str(source)],
                "tokenizer": str(shared_tokenizer("mistral")),
                "out": str(tmp_path / out),
                **config,
            }
        )

    plain = build("plain")
    assert plain["tokenizer"]["pipeline"].startswith("transformers-5:LlamaTokenizer")
    assert plain["config"]["template_date"] is None  # the template reads no date
    first = build("a", chat_template=str(dated), template_date="2025-03-09")
    second = build("b", chat_template=str(dated), template_date="2025-03-10")
    assert first["config"]["template_date"] == "2025-03-09"
    assert first["fingerprint"] != second["fingerprint"]
    today = build("c", chat_template=str(dated))
    assert today["config"]["template_date"] is not None  # settled and recorded, not "whenever"
