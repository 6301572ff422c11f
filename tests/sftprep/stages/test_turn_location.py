"""Turn location on small templates that each break one assumption real families break: every
trained turn is found, with its end marker, or the row fails with `unlocatable_turn`."""

import pytest

from sftprep.errors import RowError
from sftprep.stages.chat_template import compile_template, template_variables
from sftprep.stages.formats import Example, normalize_messages
from sftprep.stages.render import render_example

CHAT = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]
# harmony: a turn ends with <E> when more follows, with <R> as the very last message
HARMONY = (
    "{% for m in messages %}<S>{{ m.role }}<M>{{ m.content }}"
    "{% if m.role == 'assistant' and loop.last and not add_generation_prompt %}<R>{% else %}<E>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<S>assistant{% endif %}"
)
# Qwen3.5-style: the generation prompt pre-fills <think>\n; only the last turn keeps its reasoning
PREFILL = (
    "{% for m in messages %}<{{ m.role }}>"
    "{% if m.role == 'assistant' and loop.last %}<think>\n{{ m.reasoning_content or '' }}</think>{% endif %}"
    "{{ m.content }}<end>\n{% endfor %}{% if add_generation_prompt %}<assistant><think>\n{% endif %}"
)
# DeepSeek-V3-style: every system message is printed first, wherever it stands
SYSTEM_FIRST = (
    "{% for m in messages if m.role == 'system' %}{{ m.content }}|{% endfor %}"
    "{% for m in messages if m.role != 'system' %}<{{ m.role }}>{{ m.content }}<end>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def spans(template: str, messages: list, loss_on: str = "assistant") -> list[str]:
    example = Example("chat", messages=normalize_messages(messages))
    rendered = render_example(
        example, loss_on, compile_template(template), template_variables({}, None)
    )
    return [rendered.text[a:b] for a, b in rendered.spans]


def test_harmony_earlier_turns_train_with_the_end_marker_they_have_in_the_full_render():
    assert spans(HARMONY, CHAT) == ["<M>Hello.<E>", "<M>4<R>"]
    # a chat that ends on a user turn still trains every reply
    assert spans(HARMONY, CHAT[:3]) == ["<M>Hello.<E>"]


def test_a_prefilled_generation_prompt_is_not_trained_and_does_not_hide_the_turn():
    chat = [*CHAT[:3], {**CHAT[3], "reasoning_content": "add"}]
    # the earlier turn starts after the common part of prompt and render ("<assistant>"); the
    # last one after the whole prompt, pre-filled "<think>\n" included
    assert spans(PREFILL, chat) == ["Hello.<end>", "add</think>4<end>"]


def test_consecutive_assistant_turns_and_a_dropped_reasoning_block():
    chat = [
        CHAT[0],
        {"role": "assistant", "content": "A", "reasoning_content": "r1"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "C"},
    ]
    assert spans(PREFILL, chat) == ["A<end>", "B<end>", "</think>C<end>"]


def test_a_system_message_the_template_moves_to_the_top():
    chat = [*CHAT[:2], {"role": "system", "content": "Be brief."}, *CHAT[2:]]
    assert spans(SYSTEM_FIRST, chat) == ["Hello.<end>", "4<end>"]


def test_tool_call_with_null_content_reaches_the_template_without_content():
    template = (
        "{% for m in messages %}<{{ m.role }}>{% if m.content is defined %}{{ m.content }}"
        "{% else %}CALL {{ m.tool_calls[0].function.name }}{% endif %}<end>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    call = {"function": {"name": "lookup", "arguments": {}}}
    chat = [
        CHAT[0],
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "x"},
        {"role": "assistant", "content": ""},
    ]
    assert spans(template, chat) == ["CALL lookup<end>", "<end>"]  # an empty reply trains its end


def test_a_turn_the_template_drops_is_a_row_error_not_a_lost_span():
    drops_first_reply = (
        "{% for m in messages %}{% if not (m.role == 'assistant' and loop.index0 == 1 and not loop.last) %}"
        "<{{ m.role }}>{{ m.content }}<end>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    with pytest.raises(RowError) as err:
        spans(drops_first_reply, CHAT)
    assert err.value.reason == "unlocatable_turn" and "message 1" in str(err.value)


def test_strftime_now_renders_the_template_date():
    template = "{{ strftime_now('%d %b %Y') }}{% for m in messages %}{{ m.content }}{% endfor %}"
    example = Example("chat", messages=normalize_messages(CHAT))
    rendered = render_example(
        example, "assistant", compile_template(template), template_variables({}, "2025-03-09")
    )
    assert rendered.text.startswith("09 Mar 2025")
