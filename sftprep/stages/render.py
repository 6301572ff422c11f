"""Render an Example to text and the character spans that count toward the loss.

Masks are computed, not searched. For a chat, what assistant turn i trains is what the model would
generate after the template's generation prompt: in the full render F, from the end of
render(messages[:i], add_generation_prompt=True) to where the next message begins, with trailing
whitespace left out (the one rule we apply at turn edges). Worked example (ChatML)::

    F = "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n"
                                                          ^^^^^^^^^^^^^^^^ trained span

Some templates are not prefix-preserving (Qwen3 drops the reasoning of turns before the last user
query, so render(messages[:i+1]) is not a prefix of F). Then the turn's own text T (rendered as the
last turn) is aligned to F: the span ends after the longest suffix of T that F continues with at
the turn's start, which is the turn as F renders it.
"""

import json
from dataclasses import dataclass

from sftprep.drop_reasons import DropReason
from sftprep.errors import RowError
from sftprep.stages.chat_template import render, template_messages
from sftprep.stages.formats import Example


@dataclass(frozen=True)
class Rendered:
    """Text to tokenize, and the character spans [start, end) whose tokens are trained."""

    text: str
    spans: tuple
    add_special_tokens: bool
    """True for text and plain prompt/completion (the tokenizer adds BOS); False for chats."""
    append_eos: bool
    """True when the example must end with EOS (text, plain prompt/completion)."""


def render_example(example: Example, loss_on: str, template, special_tokens: dict) -> Rendered:
    """Render one example under a loss policy (assistant | last-assistant | all)."""
    if example.kind == "text":
        return Rendered(example.text, ((0, len(example.text)),), True, True)
    if example.kind == "completion":
        text = example.prompt + example.completion
        start = 0 if loss_on == "all" else len(example.prompt)
        return Rendered(text, ((start, len(text)),), True, True)
    if template is None:
        raise RowError(
            DropReason.NO_CHAT_TEMPLATE,
            "this is a conversation but the tokenizer has no chat template; pass --chat-template FILE, "
            "or --chat-template chatml to set up ChatML",
        )
    return _render_chat(example, loss_on, template, special_tokens)


def require_unicode(rendered: Rendered) -> Rendered:
    """The rendered text unchanged, or a RowError(`invalid_unicode`) if it holds a lone surrogate.

    JSON allows an unpaired UTF-16 escape ("\\ud83d"); Python keeps it as a surrogate code point,
    which no tokenizer can encode (the whole batch would fail, naming no row). ASCII text, the
    common case, is checked in O(1).
    """
    text = rendered.text
    if text.isascii():
        return rendered
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        context = text[max(0, err.start - 20) : err.start]
        raise RowError(
            DropReason.INVALID_UNICODE,
            f"the text holds a lone UTF-16 surrogate {ascii(text[err.start])} after {context!r} (an unpaired "
            "\\uXXXX escape); pair it (e.g. \\ud83d\\ude00) or remove it",
        ) from None
    return rendered


def trained_messages(example: Example, loss_on: str) -> list[bool]:
    """Which messages train: the policy, then each message's own `train` flag."""
    messages = example.messages
    assistants = [
        i
        for i, m in enumerate(messages)
        if m["role"] == "assistant" and i >= example.prompt_messages
    ]
    chosen = set(assistants[-1:]) if loss_on == "last-assistant" else set(assistants)
    flags = [i in chosen for i in range(len(messages))]
    return [
        m.get("train", flag) if isinstance(m.get("train"), bool) else flag
        for m, flag in zip(messages, flags)
    ]


def _render_chat(example: Example, loss_on: str, template, special_tokens: dict) -> Rendered:
    messages = template_messages(list(example.messages))

    def r(msgs, gen=False):
        return render(template, msgs, example.tools, special_tokens, add_generation_prompt=gen)

    if (
        loss_on != "all"
        and not any(m["role"] == "assistant" for m in example.messages)
        and not any(m.get("train") for m in example.messages)
    ):
        raise RowError(
            DropReason.NO_ASSISTANT_TURN,
            "the conversation has no assistant turn, so nothing would be trained; add one, or use --loss-on all",
        )
    full = r(messages)
    require_tools_rendered(example, full)
    if loss_on == "all":
        excluded = [i for i, m in enumerate(example.messages) if m.get("train") is False]
        spans = _subtract([(0, len(full))], [_turn_span(r, messages, full, i) for i in excluded])
        return Rendered(full, tuple(spans), False, False)
    spans = [
        _turn_span(r, messages, full, i)
        for i, t in enumerate(trained_messages(example, loss_on))
        if t
    ]
    return Rendered(full, tuple(s for s in spans if s[1] > s[0]), False, False)


def require_tools_rendered(example: Example, full: str) -> None:
    """A RowError(`tools_unsupported`) when the render dropped a tool call or a tool schema.

    Templates without tool support (SmolLM2's, Llama-3's short one) silently leave `tool_calls`
    and `tools` out, and an empty assistant turn would be trained. The check is structural: each
    call's function name and argument names, and each tool's name, must appear in the render.
    """
    for i, message in enumerate(example.messages):
        for call in message.get("tool_calls") or []:
            fn = call.get("function", call)
            arguments = fn.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    arguments = {}
            names = [fn["name"], *(arguments if isinstance(arguments, dict) else {})]
            if missing := [n for n in names if str(n) not in full]:
                raise RowError(
                    DropReason.TOOLS_UNSUPPORTED,
                    f"message {i} calls tool {fn['name']!r}, but the chat template does not render it "
                    f"({', '.join(map(repr, missing))} missing from the text); pass --chat-template with tool support",
                )
    for tool in example.tools or []:
        name = tool.get("function", tool).get("name") if isinstance(tool, dict) else None
        if isinstance(name, str) and name not in full:
            raise RowError(
                DropReason.TOOLS_UNSUPPORTED,
                f"the row's `tools` list {name!r}, but the chat template does not render it; "
                "pass --chat-template with tool support, or drop the tools column",
            )


def _turn_span(r, messages: list, full: str, i: int) -> tuple[int, int]:
    """Characters of `full` that message i contributes after its header (see the module docstring).

    An assistant turn starts where the generation prompt ends. Another role (trained only through
    its `train: true` flag) has no generation prompt: it starts where its content does.
    """
    is_assistant = messages[i]["role"] == "assistant"
    if i == 0 and not is_assistant:
        head = ""
    else:
        try:
            head = r(messages[:i], gen=is_assistant)
        except RowError:
            if i == 0:
                raise RowError(
                    DropReason.TEMPLATE_ERROR,
                    "the conversation starts with an assistant turn, which the template cannot prompt for; start with a user (or system) message",
                ) from None
            raise
    if not full.startswith(head):
        raise RowError(
            DropReason.TEMPLATE_ERROR,
            f"the chat template renders the conversation before message {i} differently once later messages "
            "follow, so its turn cannot be located; use --chat-template with a prefix-preserving template",
        )
    own = full if i == len(messages) - 1 else r(messages[: i + 1])
    if not own.startswith(head):
        raise RowError(
            DropReason.TEMPLATE_ERROR,
            f"the chat template's generation prompt is not how it renders message {i}; use --chat-template with a consistent template",
        )
    turn = own[len(head) :]
    if full.startswith(turn, len(head)):
        end = len(head) + len(turn)
    else:
        end = len(head) + _longest_suffix_continuing(turn, full, len(head))
    start = len(head)
    content = messages[i].get("content")
    if not is_assistant and isinstance(content, str) and content.strip():
        found = full.find(content.strip(), start, end)
        start = found if found >= 0 else start
    while end > start and full[end - 1].isspace():
        end -= 1
    return start, end


def _longest_suffix_continuing(turn: str, full: str, start: int) -> int:
    """Length of the longest suffix of `turn` that `full` continues with at `start` (KMP, linear)."""
    window = full[start : start + len(turn)]
    if not window:
        return 0
    # Prefix function of window + sep + turn: the border at the end is the longest suffix of `turn`
    # that is a prefix of `window`.
    s = window + "\x00" + turn
    pi = [0] * len(s)
    for k in range(1, len(s)):
        j = pi[k - 1]
        while j and s[k] != s[j]:
            j = pi[j - 1]
        if s[k] == s[j]:
            j += 1
        pi[k] = j
    return min(pi[-1], len(window))


def _subtract(spans: list, holes: list) -> list:
    """Spans minus holes, all as [start, end) character ranges."""
    out = spans
    for h0, h1 in holes:
        nxt = []
        for s0, s1 in out:
            if h1 <= s0 or h0 >= s1:
                nxt.append((s0, s1))
                continue
            if s0 < h0:
                nxt.append((s0, h0))
            if h1 < s1:
                nxt.append((h1, s1))
        out = nxt
    return out
