"""Every chat-template family we claim, on multi-turn chats with system prompts, reasoning, tool
calls and the shapes templates disagree on (tests/sftprep/chat_corpus.py).

References, all independent of sftprep: transformers' `apply_chat_template(tokenize=True)` for the
ids (every row it renders must build with exactly its ids; every row it refuses must be dropped
as `template_error`), and TRL's `*_training.jinja` `{% generation %}` masks where TRL ships one.
The masks agree on every non-whitespace token except the documented generation-prompt rule: a
token TRL trains that is part of the generation prompt (`<|start|>assistant`, a pre-filled
`<think>`) is prompted to the model, never generated, so we do not train it.
"""

import json
from pathlib import Path

import pytest

import sftprep
from tests.conftest import hf_tokenizer, shared_tokenizer, trl_template
from tests.sftprep.build_checks import check_build, examples_by_id, load_manifest
from tests.sftprep.chat_corpus import chats

# family: (tokenizer in ../shared/assets, TRL template or None for the tokenizer's own,
#          TRL training template or None, end-of-turn markers every trained turn must end with)
FAMILIES = {
    "gptoss": ("gptoss", None, "gptoss_training", ("<|end|>", "<|return|>", "<|call|>")),
    "qwen3": ("qwen3", None, "qwen3_training", ("<|im_end|>",)),
    "qwen3_5_think": ("qwen3", "qwen3_5_think", "qwen3_5_think_training", ("<|im_end|>",)),
    "qwen3_5_nothink": ("qwen3", "qwen3_5_nothink", "qwen3_5_nothink_training", ("<|im_end|>",)),
    "qwen3_6": ("qwen3", "qwen3_6", "qwen3_6_training", ("<|im_end|>",)),
    "qwen3_8": ("qwen3", "qwen3_8", "qwen3_8_training", ("<|im_end|>",)),
    "deepseek_v3": ("deepseek_v3", None, None, ("<｜end▁of▁sentence｜>",)),
    "deepseekv3": ("deepseek_v3", "deepseekv3", "deepseekv3_training", ("<｜end▁of▁sentence｜>",)),
    "deepseek_r1_distill": (
        "deepseek_v3",
        "deepseek_r1_distill",
        "deepseek_r1_distill_training",
        ("<｜end▁of▁sentence｜>",),
    ),
    "nemotron_3_nano": ("qwen3", "nemotron_3_nano", "nemotron_3_nano_training", ("<|im_end|>",)),
    "llama3_1": ("llama3_1", None, None, ("<|eot_id|>", "<|eom_id|>")),
    "llama3_2": ("llama3", "llama3_2", None, ("<|eot_id|>", "<|eom_id|>")),
    "gemma2": ("gemma2", None, "gemma_training", ("<end_of_turn>",)),
    "gemma3": ("gemma3", None, "gemma3_training", ("<end_of_turn>",)),
    "mistral": ("mistral", None, None, ("</s>",)),
    "llama2": ("llama2", None, None, ("</s>",)),
}
# The only rows transformers renders that a build may drop, with the reason a user would accept.
ACCEPTED_DROPS = {
    # the template refuses every conversation cut after a leading assistant turn, so its end
    # cannot be told by the per-prefix renders ("No user query found"; --renderer jinja2); the
    # loop steps (the default) locate it
    ("qwen3_5_think", "assistant_first"): "unlocatable_turn",
    ("qwen3_5_nothink", "assistant_first"): "unlocatable_turn",
    ("qwen3_6", "assistant_first"): "unlocatable_turn",
    ("qwen3_8", "assistant_first"): "unlocatable_turn",
}
ROWS = chats(60)


def _build(tmp_path, tokenizer: Path, template: Path | None) -> Path:
    source = tmp_path / "chats.jsonl"
    source.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "kind"}) + "\n" for r in ROWS)
    )
    out = tmp_path / "build"
    config = {
        "sources": [str(source)],
        "tokenizer": str(tokenizer),
        "out": str(out),
        "packing": "none",
        "max_length": 65536,
        "num_proc": 1,
        "on_error": "skip",
    }
    if template is not None:
        config["chat_template"] = str(template)
    sftprep.build(config)
    check_build(out)
    return out


def _reference(hf, row: dict, **kwargs):
    """transformers' ids (and masks); its `strftime_now` prints today, the build's default date."""
    try:
        return hf.apply_chat_template(
            row["messages"],
            tools=row.get("tools"),
            tokenize=True,
            return_dict=True,
            **kwargs,
        )
    except Exception:  # noqa: BLE001 - any refusal of the template is a refusal
        return None


def _trained_turns(row: dict) -> int:
    return sum(m["role"] == "assistant" for m in row["messages"])


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_ids_equal_transformers_and_no_rendered_row_is_lost(tmp_path, family):
    tok_name, template_name, _, ends = FAMILIES[family]
    tokenizer = shared_tokenizer(tok_name)
    template = trl_template(template_name) if template_name else None
    out = _build(tmp_path, tokenizer, template)
    hf = hf_tokenizer(str(tokenizer), str(template) if template else None)
    built = examples_by_id(out)
    rendered = 0
    for example_id, row in enumerate(ROWS):
        ref = _reference(hf, row)
        if ref is None:
            assert example_id not in built, (family, example_id, row["kind"])
            continue
        accepted = ACCEPTED_DROPS.get((family, row["kind"]))
        if accepted and example_id not in built:
            continue
        rendered += 1
        assert example_id in built, (family, example_id, row["kind"])
        ids, mask = built[example_id]
        assert ids == ref["input_ids"], (family, example_id, row["kind"])
        trained = hf.decode([t for t, keep in zip(ids, mask) if keep], skip_special_tokens=False)
        assert sum(trained.count(end) for end in ends) >= _trained_turns(row), (
            family,
            example_id,
            row["kind"],
            trained[-300:],
        )
    assert rendered >= len(ROWS) // 3, rendered  # not vacuous: most shapes render on every family
    dropped = load_manifest(out)["dropped"]
    assert set(dropped) <= {"template_error", "tools_unsupported", "unlocatable_turn"}, dropped


def _generation_prompts(hf, row: dict) -> list[str]:
    """What add_generation_prompt appends before each assistant turn, by transformers."""
    prompts = []
    for i, message in enumerate(row["messages"]):
        if message["role"] != "assistant" or i == 0:
            continue
        try:
            plain = hf.apply_chat_template(
                row["messages"][:i], tools=row.get("tools"), tokenize=False
            )
            prompted = hf.apply_chat_template(
                row["messages"][:i],
                tools=row.get("tools"),
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception:  # noqa: BLE001, S112 - a prefix the template refuses has no prompt
            continue
        if prompted.startswith(plain):
            prompts.append(prompted[len(plain) :])
    return prompts


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f, spec in FAMILIES.items() if spec[2]])
def test_masks_agree_with_trl_training_templates(tmp_path, family):
    tok_name, _, training_name, _ = FAMILIES[family]
    tokenizer = shared_tokenizer(tok_name)
    training = trl_template(training_name)
    out = _build(tmp_path, tokenizer, training)
    hf = hf_tokenizer(str(tokenizer), str(training))
    built = examples_by_id(out)
    compared = disagreements = 0
    for example_id, row in enumerate(ROWS):
        ref = _reference(hf, row, return_assistant_tokens_mask=True)
        if ref is None or example_id not in built or not sum(ref["assistant_masks"]):
            continue
        ids, mask = built[example_id]
        assert ids == ref["input_ids"], (family, example_id)
        prompts = "".join(_generation_prompts(hf, row))
        compared += 1
        for pos, (ours, theirs) in enumerate(zip(mask, ref["assistant_masks"])):
            text = hf.decode([ids[pos]])
            if not pos or ours == theirs or not text.strip():
                continue
            if not ours and text.strip() in prompts:
                continue  # the generation-prompt rule (module docstring)
            disagreements += 1
    assert compared >= len(ROWS) // 3, compared
    assert disagreements == 0
