"""Turns read off the loop steps of one render (loop_steps.py), proven equal to rendering every
prefix: on the published templates PROVEN lists, for the real multi-turn chats of the corpus and
for random conversations built to break the rule (hostile contents, reasoning, tool round trips,
empty and whitespace turns, long chats); and each of its guards made to fire."""

import hashlib
import random

import pytest

from sftprep.stages import loop_steps, render
from sftprep.stages.chat_template import compile_template
from sftprep.stages.fingerprint import build_fingerprint
from sftprep.stages.formats import Example, normalize_messages
from sftprep.stages.loop_steps import steps_problem
from sftprep.stages.prefix_renders import Watched
from sftprep.stages.render import BY_STEPS
from sftprep.stages.tokenizer import load_tokenizer
from tests.conftest import hf_tokenizer, shared_tokenizer, trl_template
from tests.sftprep.chat_corpus import TOOLS
from tests.sftprep.stages.test_prefix_renders import ALL, ROWS, SMALL, _forced, _source
from tests.sftprep.test_template_families import ACCEPTED_DROPS, FAMILIES, _reference

# the families whose conversations are located by loop steps (they are not prefix-local)
STEPPED = [
    "qwen3", "qwen3_5_think", "qwen3_5_nothink", "qwen3_6", "qwen3_8", "llama3_1", "llama3_2",
    "gemma3", "llama2",
]  # fmt: skip
PLAIN = [
    "",
    " ",
    "\n\n",
    "plain answer",
    "ends with spaces   \n",
    "\u00a0non-breaking\u3000spaces\u00a0",
    "multi\nline\n\nanswer",
]
# contents that fake a template's own markup: the per-prefix renders' suffix alignment can be
# fooled by them (they are the heuristic here), so these rows are compared with TRL's masks
HOSTILE = [
    *PLAIN,
    "<think>\nnot reasoning\n</think>\n\nstill content",
    "<|im_start|>assistant\n",
    "<|im_end|>\n<|im_start|>user\nfake",
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "<tool_response>\nx\n</tool_response>",
]


def _random_chat(rng: random.Random, turns: int, pool: list) -> dict:
    """A conversation of about `turns` messages with contents from `pool`: user turns, assistant
    turns with or without reasoning, tool calls and (sometimes several) tool results, a system
    prompt or none."""
    said = pool[3:]  # a user, system or tool message that says something
    messages = [{"role": "system", "content": rng.choice(said)}] if rng.random() < 0.3 else []
    while len(messages) < turns:
        messages.append({"role": "user", "content": rng.choice(said)})
        if rng.random() < 0.25:
            call = {"role": "assistant", "content": rng.choice([None, "", "Let me look."])}
            call["tool_calls"] = [
                {"type": "function", "function": {"name": "lookup", "arguments": {"word": "w"}}}
            ]
            if rng.random() < 0.5:
                call["reasoning_content"] = rng.choice(pool)
            messages.append(call)
            for _ in range(rng.choice([1, 1, 2])):
                messages.append({"role": "tool", "content": rng.choice(said)})
        reply = {"role": "assistant", "content": rng.choice(pool)}
        if rng.random() < 0.5:
            reply["reasoning_content"] = rng.choice(pool)
        messages.append(reply)
    return {"messages": messages, "tools": TOOLS} if rng.random() < 0.5 else {"messages": messages}


FUZZED = [_random_chat(random.Random(seed), 2 + seed % 24, PLAIN) for seed in range(120)]
LONG = [_random_chat(random.Random(1000 + seed), 80, PLAIN) for seed in range(3)]
# user/assistant turns only, alternating from a user (Gemma's and Llama-2's templates refuse
# anything else)
ALTERNATING = [
    {
        "messages": [
            {
                "role": ("user", "assistant")[k % 2],
                "content": random.Random(seed + k).choice(PLAIN),
            }
            for k in range(2 * (1 + seed % 12))
        ]
    }
    for seed in range(60)
]
FUZZED_HOSTILE = [_random_chat(random.Random(seed), 2 + seed % 24, HOSTILE) for seed in range(120)]


def _located(example: Example, template, variables: dict):
    """(outcome, how): the row's Rendered or (reason, detail), and what located its turns."""
    how: list = []
    try:
        outcome = render._render_chat(example, "assistant", template, variables, how)
    except render.RowError as err:
        outcome = (err.reason, err.detail)
    return outcome, how


def _exact(example: Example, template, variables: dict):
    try:
        return render._render_chat(example, "assistant", template, variables, None)
    except render.RowError as err:
        return err.reason, err.detail


def _example(row: dict) -> Example:
    return Example("chat", messages=normalize_messages(row["messages"]), tools=row.get("tools"))


# the families whose per-prefix renders locate the random chats exactly too; on Qwen3.5/3.6 they
# do not (test_the_steps_are_right_where_the_prefix_renders_are_not)
RELIABLE = {"qwen3", "qwen3_8", "llama3_1", "llama3_2", "gemma3", "llama2"}


@pytest.mark.parametrize("thinking", [None, False])
@pytest.mark.parametrize("family", STEPPED)
def test_spans_equal_those_of_rendering_every_prefix(family, thinking):
    source, variables = _source(family)
    if thinking is not None:
        variables = {**variables, "enable_thinking": thinking}
    template = compile_template(source)
    assert template.stepped is not None, family
    exact = _forced(source, "every prefix rendered, by Jinja2", "jinja2")
    rows = (
        [*ROWS, *FUZZED, *LONG, *ALTERNATING] if family in RELIABLE and thinking is None else ROWS
    )
    by_steps = 0
    for row in rows:
        example = _example(row)
        outcome, how = _located(example, template, variables)
        want = _exact(example, exact, variables)
        if (family, row.get("kind")) in ACCEPTED_DROPS and want[0] == ACCEPTED_DROPS[
            (family, row["kind"])
        ]:  # the prefix renders cannot end a leading assistant turn; its step does
            assert how == [BY_STEPS]
            assert outcome.text[slice(*outcome.spans[0])].endswith(
                "Hello! How can I help?<|im_end|>"
            )
        else:
            assert outcome == want, (family, row.get("kind"), how)
        by_steps += BY_STEPS in how
    assert by_steps >= len(rows) // 6, (family, by_steps)  # not vacuous


@pytest.mark.parametrize("family", STEPPED)
def test_every_trained_step_holds_its_whole_turn(family):
    """On random and hostile chats, each span the steps give holds the turn's content, its tool
    calls' names and its end marker, in order and without overlap; and where the per-prefix
    renders say otherwise, this is what they miss."""
    source, variables = _source(family)
    template = compile_template(source)
    ends = FAMILIES[family][3]
    checked = 0
    for row in [*FUZZED, *FUZZED_HOSTILE, *LONG, *ALTERNATING]:
        example = _example(row)
        outcome, how = _located(example, template, variables)
        if BY_STEPS not in how:
            continue
        turns = [m for m in row["messages"] if m["role"] == "assistant"]
        assert len(outcome.spans) == len(turns)
        previous = 0
        for (start, end), message in zip(outcome.spans, turns):
            assert previous <= start < end, family
            # a span may begin a few characters into the turn, after the part of a pre-filled
            # generation prompt the turn shares ("<" of "<think>" and "<|im_end|>"): the token
            # that overlaps it trains, so the check reads from a little before
            text = outcome.text[max(previous, start - 8) : end]
            assert text.endswith(ends), (family, text)
            said = (message.get("content") or "").split("</think>")[-1].strip()
            assert message.get("tool_calls") or said in text, (family, said, text)
            for call in message.get("tool_calls") or []:
                assert call["function"]["name"] in text, (family, text)
            previous = end
        checked += 1
    assert checked >= 60, (family, checked)


def test_the_steps_are_right_where_the_prefix_renders_are_not():
    """Qwen3.6 on random tool chats: the per-prefix renders' suffix alignment drops turns as
    unlocatable or puts a span on another turn's equal text; the steps hold each whole turn
    (test above). Not vacuous: such rows exist."""
    source, variables = _source("qwen3_6")
    template = compile_template(source)
    exact = _forced(source, "every prefix rendered, by Jinja2", "jinja2")
    differ = 0
    for row in [*FUZZED, *LONG]:
        example = _example(row)
        outcome, how = _located(example, template, variables)
        want = _exact(example, exact, variables)
        if outcome != want:
            assert how == [BY_STEPS]
            assert isinstance(want, tuple) or want.text == outcome.text
            differ += 1
    assert differ >= 3, differ


def test_a_long_conversation_is_located_by_steps_with_few_renders(monkeypatch):
    """Linear: an 80-message chat costs a few renders (the full one, the first trained turn's
    prefixes), not two per turn."""
    source, variables = _source("qwen3")
    template = compile_template(source)
    calls = []
    real = render.render
    monkeypatch.setattr(render, "render", lambda *a, **k: calls.append(1) or real(*a, **k))
    row = {"messages": [m for m in LONG[0]["messages"] if m["role"] in ("user", "assistant")]}
    row["messages"] = [m for m in row["messages"] if not m.get("tool_calls")]
    outcome, how = _located(_example(row), template, variables)
    assert how == [BY_STEPS] and len(outcome.spans) >= 20
    assert len(calls) <= 8, len(calls)


def test_proven_are_the_published_templates_whose_syntax_allows_steps():
    allowed = set()
    for family in ALL:
        if family in SMALL:
            continue
        source, _ = _source(family)
        if not steps_problem(compile_template(source), source):
            allowed.add(hashlib.sha256(source.encode()).hexdigest())
    assert allowed == loop_steps.PROVEN


def test_only_proven_templates_and_renderers_other_than_jinja2_use_steps():
    source, _ = _source("qwen3")
    assert _forced(source, "x", "auto").stepped is not None
    assert _forced(source, "x", "minijinja").stepped is not None
    assert _forced(source, "x", "jinja2").stepped is None
    edited = source + "{# a comment #}"  # the same syntax, another sha256: not shown on it
    assert not steps_problem(compile_template(edited), edited)
    assert _forced(edited, "x", "auto").stepped is None


SLICED = (
    "{% if messages[0].role == 'system' %}{% set rest = messages[1:] %}{% else %}"
    "{% set rest = OTHER %}{% endif %}{% for m in rest %}<|{{ m.role }}|>{{ m.content }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CHATML = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>\n{% if loop.last %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (CHATML, ""),
        (CHATML.replace("in messages %}", "in messages if m.role != 'x' %}"), "a filter"),
        (CHATML + "{% for m in messages %}{{ m.role }}{% endfor %}", "2 loops"),
        (CHATML.replace("<|end|>", "{{ add_generation_prompt }}"), "add_generation_prompt"),
        (
            "{% set ns = namespace(n=0) %}" + CHATML.replace("<|assistant|>", "{{ ns.n }}"),
            "after its message loop it reads ns",
        ),
        (CHATML.replace("<|assistant|>", "{{ messages[0].role }}"), "reads messages"),
        (SLICED.replace("OTHER", "messages"), ""),  # Gemma-3's, Llama-2's system message
        (SLICED.replace("OTHER", "[]"), "0 loops"),  # not always the messages
        (SLICED.replace("OTHER", "messages[:1]"), "0 loops"),  # not a tail
    ],
)
def test_which_syntax_allows_steps(source, problem):
    verdict = steps_problem(compile_template(source), source)
    assert (problem in verdict and verdict) if problem else verdict == ""


def _proven(source: str, monkeypatch):
    """`source` compiled as if PROVEN held it."""
    digest = hashlib.sha256(source.encode()).hexdigest()
    monkeypatch.setattr(loop_steps, "PROVEN", loop_steps.PROVEN | {digest})
    import sftprep.stages.chat_template as chat_template

    monkeypatch.setattr(chat_template, "PROVEN", loop_steps.PROVEN)
    return _forced(source, "taken for not prefix-local", "auto")


def _chat(count: int) -> Example:
    roles = ["user", "assistant"]
    return Example(
        "chat",
        messages=normalize_messages(
            [{"role": roles[i % 2], "content": f"m{i}"} for i in range(count)]
        ),
    )


def test_the_generation_prompt_is_rendered_once_per_inputs(monkeypatch):
    """The first row takes the generation prompt from its prefix renders; a row with the same
    inputs after it is one render, however many turns it has."""
    source, variables = _source("qwen3")
    template = compile_template(source, 7.5)  # a fresh compile: no prompt known yet
    calls = []
    real = render.render
    monkeypatch.setattr(render, "render", lambda *a, **k: calls.append(1) or real(*a, **k))
    first, how = _located(_chat(6), template, variables)
    assert how == [BY_STEPS] and len(calls) == 3  # the row, and messages[:1] with and without
    calls.clear()
    again, how = _located(_chat(12), template, variables)
    assert how == [BY_STEPS] and len(calls) == 1 and len(again.spans) == 6
    exact = _forced(source, "every prefix", "jinja2")
    assert again == _exact(_chat(12), exact, variables)
    calls.clear()
    _located(_chat(6), template, {**variables, "enable_thinking": False})
    assert len(calls) == 3  # another prompt: rendered again


def test_rows_the_steps_cannot_stand_for_keep_the_prefix_renders(monkeypatch):
    template = _proven(CHATML, monkeypatch)
    user_trained = Example(
        "chat",
        messages=normalize_messages(
            [
                {"role": "user", "content": "a", "train": True},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
                {"role": "assistant", "content": "d"},
            ]
        ),
    )
    assert _located(user_trained, template, {})[1] == []  # a trained user turn
    after = _proven(CHATML.replace("{% if add_generation_prompt %}", "END{% if 1 %}"), monkeypatch)
    assert after.stepped is not None
    assert _located(_chat(6), after, {})[1] == []  # prints after its loop without the prompt


@pytest.mark.parametrize(
    "family", ["qwen3", "qwen3_5_think", "qwen3_5_nothink", "qwen3_6", "qwen3_8", "gemma3"]
)
def test_steps_train_the_tokens_trl_training_templates_mark(family, monkeypatch):
    """An independent reference: TRL's `*_training.jinja` for the family, its `{% generation %}`
    masks by transformers, against the steps of the same template (taken for PROVEN here), token
    by token on the corpus and the random and hostile chats. Only the documented generation-prompt
    rule may differ: a pre-filled `<think>` / `</think>` is prompted, never generated."""
    tok_name, _, training, _ = FAMILIES[family]
    path = trl_template(training)
    hf = hf_tokenizer(str(shared_tokenizer(tok_name)), str(path))
    tokenizer = load_tokenizer(str(shared_tokenizer(tok_name)), str(path), None)
    template = _proven(tokenizer.chat_template, monkeypatch)
    variables = dict(tokenizer.special_tokens)
    compared = 0
    for row in [*ROWS, *FUZZED, *FUZZED_HOSTILE, *ALTERNATING]:
        outcome, how = _located(_example(row), template, variables)
        if BY_STEPS not in how:
            continue
        ref = _reference(hf, row, return_assistant_tokens_mask=True)
        assert ref is not None, family  # transformers renders what the build renders
        encoded = hf(outcome.text, add_special_tokens=False, return_offsets_mapping=True)
        assert encoded["input_ids"] == ref["input_ids"], family
        for (a, b), theirs, token in zip(
            encoded["offset_mapping"], ref["assistant_masks"], encoded["input_ids"]
        ):
            ours = any(start < b and a < end for start, end in outcome.spans)
            text = hf.decode([token]).strip()
            if ours != theirs and text and not (theirs and text in ("<think>", "</think>")):
                pytest.fail(f"{family}: {text!r} trained by {'us' if ours else 'TRL'} only")
        compared += 1
    assert compared >= 90, compared


def test_the_fingerprint_changes_with_the_templates_steps_locate(monkeypatch):
    """A build made before a template was PROVEN (its turns located otherwise) is not taken for
    up to date after."""
    tokenizer = load_tokenizer(str(shared_tokenizer("qwen3")), None, None)
    before = build_fingerprint({"renderer": "auto"}, [], tokenizer)
    assert build_fingerprint({"renderer": "auto"}, [], tokenizer) == before
    qwen3 = hashlib.sha256(tokenizer.chat_template.encode()).hexdigest()
    monkeypatch.setattr(loop_steps, "PROVEN", loop_steps.PROVEN - {qwen3})
    assert build_fingerprint({"renderer": "auto"}, [], tokenizer) != before
    assert loop_steps.fingerprint_part("jinja2") is None


def test_llama_with_a_system_message_is_stepped_through_the_tail_it_slices():
    """Llama-3's templates take a system message off (`set messages = messages[1:]`) and loop
    over the rest without reading `loop`: the steps come from the watched tail's fetches."""
    source, variables = _source("llama3_2")
    template = compile_template(source)
    row = next(r for r in ROWS if r["kind"] == "multi" and r["messages"][0]["role"] == "system")
    outcome, how = _located(_example(row), template, variables)
    assert how == [BY_STEPS] and len(outcome.spans) == 3


def test_steps_are_not_read_off_an_iteration_the_template_did_not_make():
    messages = Watched([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    list(messages)  # iterated by Python code, not by a loop of the template
    assert messages.passes == 1 and not messages.by_template
    assert loop_steps.step_starts(messages, "") is None


def test_a_row_is_located_alike_whatever_rows_came_before():
    """The generation prompt is read off a probe, never off an earlier row: a leading assistant
    turn (no prefix before it tells the prompt) is located alike as a process's first row and
    after others."""
    source, variables = _source("qwen3_6")
    leading = _example(next(row for row in ROWS if row["kind"] == "assistant_first"))
    first = _located(leading, compile_template(source, 7.25), variables)  # a fresh compile
    later = compile_template(source, 7.75)
    for row in ROWS[:12]:
        _located(_example(row), later, variables)
    assert _located(leading, later, variables) == first
    assert first[1] == [BY_STEPS]


def test_an_assistant_turn_before_any_user_query_is_located():
    """Qwen3.5+ refuse a conversation with no user query yet, so the prefix renders refuse an
    assistant turn that only a system message comes before; the whole chat renders, and its
    step is that turn's text."""
    source, variables = _source("qwen3_6")
    roles = ["system", "assistant", "user", "assistant"]
    example = _example({"messages": [{"role": r, "content": r[0]} for r in roles]})
    assert _exact(example, _forced(source, "every prefix", "jinja2"), variables)[0] == (
        "template_error"
    )
    outcome, how = _located(example, compile_template(source), variables)
    assert how == [BY_STEPS]
    assert [outcome.text[a:b] for a, b in outcome.spans][0] == "a<|im_end|>"
    assert [outcome.text[a:b] for a, b in outcome.spans][1].endswith("a<|im_end|>")
