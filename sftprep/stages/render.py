"""Render an Example to text and the character spans that count toward the loss.

Masks are computed, not searched. For a chat, what assistant turn i trains is what the model would
generate after the template's generation prompt: in the full render F, from the end of
render(messages[:i], add_generation_prompt=True) to where the next message begins, with trailing
whitespace left out. Worked example (ChatML)::

    F = "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n"
                                                          ^^^^^^^^^^^^^^^^ trained span

Two rules at turn edges: trailing whitespace is not trained, and what the generation prompt
pre-fills (`<think>\\n`) is not trained either; where F does not hold it, the turn starts after
the longest common prefix of the prompt and F. Templates that are not prefix-preserving are
aligned, not assumed away: an earlier turn may end with another marker than the last one does
(harmony), lose its reasoning once a later answer follows (Qwen3), or have a later system message
printed before it (DeepSeek-V3); see _turn_start and _turn_length. A turn that still cannot be
located is a RowError(`unlocatable_turn`), never an empty span.
"""

import dataclasses
import json
from dataclasses import dataclass, field

from sftprep.drop_reasons import DropReason
from sftprep.errors import RowError, SftprepError
from sftprep.stages.chat_template import known_tail, remember_tail, render, template_messages
from sftprep.stages.fast_render import row_twin, sample_due
from sftprep.stages.formats import Example
from sftprep.stages.loop_steps import step_starts
from sftprep.stages.prefix_renders import Layout, Watched, layout_of
from sftprep.stages.reasoning import answer_start


@dataclass(frozen=True)
class Rendered:
    """Text to tokenize, and the character spans [start, end) whose tokens are trained."""

    text: str
    spans: tuple
    add_special_tokens: bool
    """True for text and plain prompt/completion (the tokenizer adds BOS); False for chats."""
    append_eos: bool
    """True when the example must end with EOS (text, plain prompt/completion)."""
    eos_trained: bool = True
    """Whether that EOS trains: yes, unless the text's trained spans stop before its end."""
    id_markers: tuple | None = None
    """(response ids, instruction ids): the trained tokens are found on the ids, not `spans`."""
    located_by: str = field(default="", compare=False)
    """How a conversation's turns were located (one of LOCATED_BY); "" for other rows."""


LOCATED_BY = {
    "one-render": "one render of a prefix-local template gives every prefix's (prefix_renders.py)",
    "loop-steps": "one render, each message's loop step of the template (loop_steps.py); a turn "
    "whose step trains nothing is looked up by its prefix renders",
    "every-prefix": "each prefix rendered: by minijinja where it is shown equal to Jinja2 "
    "(fast_render.py), else by Jinja2",
}
"""The ways _render_chat locates a conversation's turns, fastest first (the manifest counts
rows per way: SourceEntry.turns_located_by; a row with no turn to locate, `loss_on: all`
without `train: false` messages, is not counted). Prefixes rendered by minijinja and by Jinja2
are one way: which of the two answers a row can depend on the rows its process met before
(fast_render.TWINS_KEPT), and a count must not change with --num-proc."""


def render_example(
    example: Example, loss_on: str, template, variables: dict, reasoning: str = "train"
) -> Rendered:
    """Render one example under a loss policy (assistant | last-assistant | all); `variables` is what
    the template sees besides the messages (chat_template.template_variables and any
    chat_template_kwargs); with reasoning `context`, only the answers of trained turns train."""
    if example.kind == "text":
        text = example.text
        spans = example.spans if example.spans is not None else ((0, len(text)),)
        return Rendered(text, spans, True, True, spans[-1][1] == len(text))
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
    rendered = _render_chat_checked(example, loss_on, template, variables)
    if reasoning != "context" or loss_on == "all":
        return rendered
    return dataclasses.replace(rendered, spans=_answers_only(example, loss_on, rendered))


def _answers_only(example: Example, loss_on: str, rendered: Rendered) -> tuple:
    """The trained spans with each assistant turn starting at its answer (reasoning.py)."""
    trained = [i for i, t in enumerate(trained_messages(example, loss_on)) if t]
    spans = []
    for i, (start, end) in zip(trained, rendered.spans, strict=True):
        message = example.messages[i]
        if message.get("role") == "assistant":
            start = answer_start(rendered.text, (start, end), message)
        spans.append((start, end))
    return tuple(spans)


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


def _render_chat_checked(example: Example, loss_on: str, template, variables: dict) -> Rendered:
    """_render_chat, located again with every prefix rendered by Jinja2 on the rows
    fast_render.sample_due picks among those minijinja's prefix renders located; a difference
    is an SftprepError. Rows located by loop steps are not: on the templates PROVEN holds the
    steps are the exact rule and the per-prefix renders the heuristic (loop_steps.py)."""
    located: list = []
    try:
        rendered = _render_chat(example, loss_on, template, variables, located)
    except RowError as err:
        if BY_TWIN in located and sample_due(template):
            _require_same(err, example, loss_on, template, variables)
        raise
    if BY_TWIN in located and sample_due(template):
        _require_same(rendered, example, loss_on, template, variables)
    return rendered


def _require_same(outcome, example: Example, loss_on: str, template, variables: dict) -> None:
    """Raise an SftprepError unless Jinja2 alone renders and locates the row as `outcome` says."""
    try:
        exact = _render_chat(example, loss_on, template, variables, None)
    except RowError as err:
        exact = err
    same = (
        (outcome.reason, outcome.detail) == (exact.reason, exact.detail)
        if isinstance(outcome, RowError) and isinstance(exact, RowError)
        else outcome == exact
    )
    if not same:
        first = _content_text(example.messages[0])[:40]
        raise SftprepError(
            f"the minijinja renderer located the turns of a conversation (first message {first!r}) "
            "otherwise than Jinja2; rebuild with --renderer jinja2, and please report it"
        )


BY_STEPS = "the loop steps of one render"
BY_TWIN = "minijinja's prefix renders"


def _render_chat(
    example: Example, loss_on: str, template, variables: dict, located: list | None
) -> Rendered:
    """The row's text and trained spans; `located`: None to locate the turns with every prefix
    rendered by Jinja2, else a list that gets BY_STEPS or BY_TWIN when the row was located so
    (loop_steps.py, fast_render.row_twin)."""
    messages = template_messages(list(example.messages))
    renders: dict = {}
    layout = None  # every prefix's render, read off the full render (prefix_renders.py)
    twin = None  # minijinja's prefix renders, where this row may use them (fast_render.py)
    starts = None  # where each message's loop step begins in the full render (loop_steps.py)

    def r(msgs, gen=False):
        """Render a prefix of `messages` (every caller passes messages[:k]), once per (k, gen):
        locating a turn asks for the same prefixes again; a refusal is remembered as well."""
        key = (len(msgs), gen)
        if key not in renders:
            try:
                if layout is not None and key[0]:
                    renders[key] = layout.render(*key)
                else:
                    text = None if twin is None else twin(msgs, gen)
                    renders[key] = (
                        text
                        if text is not None
                        else render(template, msgs, example.tools, variables, gen)
                    )
            except RowError as err:
                renders[key] = err
        if isinstance(renders[key], RowError):
            raise renders[key]
        return renders[key]

    _require_trained_turn(example, loss_on)
    trained = trained_messages(example, loss_on)
    stepped = (
        template.stepped if located is not None and _steps_may(messages, trained, loss_on) else None
    )
    tail_key, tail = known_tail(template, example.tools, variables)
    if not _one_render_may(template, stepped, messages, tail_key):
        full = r(messages)
    else:  # one render gives every prefix's, and the tail once known their generation prompt
        full, layout, starts = _watched_render(
            template, stepped, example, messages, variables, tail, lambda: r(messages[:1], True)
        )
        if full is not None:
            renders[(len(messages), False)] = full
        if layout is not None and tail is None:
            remember_tail(template, tail_key, layout.tail[True])
        full = r(messages)
    require_tools_rendered(example, full)
    prompt = None if starts is None else _step_prompt(template, example.tools, variables, tail)
    if prompt is not None and (
        spans := _spans_by_steps(r, messages, full, trained, starts, prompt)
    ):
        located.append(BY_STEPS)
        remember_tail(template, tail_key, prompt)  # the same value again once known
        return Rendered(full, spans, False, False, located_by="loop-steps")
    if layout is None and located is not None:
        twin = row_twin(template, messages, example.tools, variables, full)
        located += [BY_TWIN] if twin is not None else []
    by = "one-render" if layout is not None else "every-prefix"
    if loss_on == "all":
        excluded = [i for i, m in enumerate(example.messages) if m.get("train") is False]
        spans = _subtract(
            [(0, len(full))], [_turn_span(r, messages, full, i, layout) for i in excluded]
        )
        return Rendered(full, tuple(spans), False, False, located_by=by if excluded else "")
    spans = tuple(_turn_span(r, messages, full, i, layout) for i, t in enumerate(trained) if t)
    return Rendered(full, spans, False, False, located_by=by)


def _watched_render(template, stepped, example: Example, messages: list, variables, tail, first):
    """One watched render of the whole row: (its text, or None when the template refuses it,
    which the plain render then says again; its Layout where the template is prefix-local and
    the row allows it (prefix_renders.layout_of, `tail` and `first` as there); else, rendered by
    `stepped`, where each message's loop step begins (loop_steps.step_starts), or None)."""
    watched = Watched(messages)
    try:
        full = render(stepped or template, watched, example.tools, variables)
    except RowError:
        return None, None, None
    layout = None if template.prefix_problem else layout_of(watched, full, first, tail)
    starts = step_starts(watched, full) if layout is None and stepped is not None else None
    return full, layout, starts


def _one_render_may(template, stepped, messages: list, tail_key) -> bool:
    """Whether one watched render of the whole row may stand for its prefix renders: the
    template is prefix-local or stepped (loop_steps.py), and the row has more than one prefix
    to render (a 2-message chat needs one, unless its tail is known: rendering it is as fast)."""
    if template.prefix_problem and stepped is None:
        return False
    return len(messages) > 2 or (len(messages) == 2 and tail_key is not None)


def _steps_may(messages: list, trained: list, loss_on: str) -> bool:
    """Whether the loop steps may locate this row's turns (loop_steps.py): trained turns all of
    the assistant, under a policy that trains turns (not `all`)."""
    return loss_on != "all" and all(
        messages[i]["role"] == "assistant" for i, t in enumerate(trained) if t
    )


def _spans_by_steps(r, messages: list, full: str, trained: list, starts: list, prompt: str):
    """The trained spans by _step_span with generation prompt `prompt`, or None when a
    trained turn has no step (the caller then locates the turns by their prefix renders)."""
    turns = [i for i, t in enumerate(trained) if t]
    if any(starts[i] is None for i in turns):  # before the messages the loop steps through
        return None
    return tuple(  # an empty step: the prefix renders say why
        _step_span(full, starts, prompt, i) or _turn_span(r, messages, full, i, None) for i in turns
    )


def _step_span(full: str, starts: list, prompt: str, i: int) -> tuple[int, int] | None:
    """Assistant turn i's trained span read off the loop steps `starts` (loop_steps.py): its step
    less the part of `prompt` it begins with and trailing whitespace; None when that is empty."""
    start, end = starts[i], starts[i + 1]
    start += _common_prefix(prompt, full[start : min(end, start + len(prompt))])
    while end > start and full[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


PROMPT_PROBE = ({"role": "user", "content": "x"},)
"""The conversation the generation prompt of a stepped template is read from: what the template
prints after its loop is a function of the inputs alone (loop_steps.steps_problem), so any
conversation tells it, and one that is not the row's keeps the answer the same for every row
with those inputs, whatever rows a process met before."""


def _step_prompt(template, tools, variables: dict, known: str | None) -> str | None:
    """The generation prompt P of loop_steps.py for these inputs: `known` (known_tail), else
    render(PROMPT_PROBE, True) less render(PROMPT_PROBE); None when the template refuses the
    probe or the one is not the other continued."""
    if known is not None:
        return known
    probe = template_messages(list(PROMPT_PROBE))
    try:
        plain = render(template, probe, tools, variables)
        head = render(template, probe, tools, variables, add_generation_prompt=True)
    except RowError:
        return None
    return head[len(plain) :] if head.startswith(plain) else None


def _require_trained_turn(example: Example, loss_on: str) -> None:
    """A RowError(`no_assistant_turn`) when the policy would train nothing in this chat."""
    if (
        loss_on != "all"
        and not any(m["role"] == "assistant" for m in example.messages)
        and not any(m.get("train") for m in example.messages)
    ):
        raise RowError(
            DropReason.NO_ASSISTANT_TURN,
            "the conversation has no assistant turn, so nothing would be trained; add one, or use --loss-on all",
        )


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


def _turn_span(r, messages: list, full: str, i: int, layout: Layout | None) -> tuple[int, int]:
    """Characters of `full` that message i contributes after its header (see the module docstring).

    Never empty: a turn that cannot be located, or that renders no text of its own, is a
    RowError(`unlocatable_turn`) saying what differs, so no trained turn is lost without a word.
    """
    located = _located_by_layout(layout, messages, i)
    if located is not None:
        start, end = located
    else:
        start = _turn_start(r, messages, full, i)
        end = start + _turn_length(r, messages, full, i, start)
    while end > start and full[end - 1].isspace():
        end -= 1
    if end <= start:
        raise RowError(
            DropReason.UNLOCATABLE_TURN,
            f"message {i} ({messages[i]['role']}) renders no text of its own in the conversation "
            f"(the template drops it); remove the message or pass --chat-template with a template that renders it",
        )
    return start, end


def _located_by_layout(layout: Layout | None, messages: list, i: int) -> tuple[int, int] | None:
    """Assistant turn i's (start, end) before trimming, in constant time, where the full render
    holds its prompt and turn as prefix renders: the answer _turn_start and _turn_length give
    on their first branch, with each prefix compared by its tail alone (prefix_renders.Layout);
    None otherwise (they then locate it)."""
    if layout is None or not i or messages[i]["role"] != "assistant":
        return None
    if not layout.continues_after(i, True):
        return None
    start = layout.ends[i] + len(layout.tail[True])
    if i == len(messages) - 1:
        return start, len(layout.full)
    if start > layout.ends[i + 1] or not layout.continues_after(i + 1, False):
        return None
    return start, layout.ends[i + 1] + len(layout.tail[False])


def _turn_start(r, messages: list, full: str, i: int) -> int:
    """Where message i's own text begins in `full`.

    An assistant turn begins where the model starts generating: after the generation prompt P =
    render(messages[:i], add_generation_prompt=True). When P is not a prefix of `full` because it
    pre-fills text the full render does not have there (`<think>\n` opening a reasoning block),
    the turn begins after the longest common prefix of P and `full`, provided the two part inside
    the generation prompt itself, not in the history before it. Another role (trained only through
    its `train: true` flag), or an assistant turn that nothing can prompt for (the first message,
    when the template cannot render an empty conversation), begins where its content does.
    """
    message = messages[i]
    if message["role"] != "assistant":
        before = r(messages[:i]) if i else ""
        return _content_start(message, full, _common_prefix(before, full))
    if i == 0:
        head = _prompt_or_none(r, [], True)
        if head is None:
            return _leading_turn_start(r, messages, full)
    else:
        head = r(messages[:i], gen=True)
    if full.startswith(head):
        return len(head)
    common = _common_prefix(head, full)
    history = r(messages[:i]) if i else ""
    if common >= _common_prefix(head, history):
        return common
    after = _history_end(r, messages, i, full, common) if i else None
    prompt = _generation_prompt(r, messages, i)
    if after is not None and prompt:
        return after + _common_prefix(prompt, full[after : after + len(prompt)])
    raise RowError(
        DropReason.UNLOCATABLE_TURN,
        f"message {i} (assistant) cannot be located: the template renders the conversation before it "
        f"differently once later messages follow ({full[common : common + 30]!r} where the prompt alone has "
        f"{head[common : common + 30]!r}); pass --chat-template with a prefix-preserving template",
    )


def _leading_turn_start(r, messages: list, full: str) -> int:
    """Where a leading assistant turn begins when the template cannot render an empty prompt.

    After the first place `full` holds the generation prompt (as the template renders it after
    another message), or that prompt less its trailing whitespace (a pre-filled `<think>\n` the
    render closes at once, as in `<think></think>`), if that is before the turn's content; else at
    the content itself.
    """
    content_at = _content_start(messages[0], full, 0)
    limit = content_at if _content_text(messages[0]) else len(full)
    prompt = _generation_prompt(r, messages, 0)
    for header in (prompt, prompt.rstrip()) if prompt else ():
        found = full.find(header) if header else -1
        if found >= 0 and found + len(header) <= limit:
            return found + len(header)
    return content_at


def _prompt_or_none(r, messages: list, gen: bool) -> str | None:
    """The render of `messages` (an assistant-first turn: of nothing), or None when the template refuses it."""
    try:
        return r(messages, gen=gen)
    except RowError:
        return None


def _content_text(message: dict) -> str:
    """The message's content stripped, or "" when it has none as text."""
    content = message.get("content")
    return content.strip() if isinstance(content, str) else ""


def _content_start(message: dict, full: str, after: int) -> int:
    """Where the message's content begins in `full` at or after `after` (`after` when not found)."""
    if content := _content_text(message):
        found = full.find(content, after)
        return found if found >= 0 else after
    return after


def _turn_length(r, messages: list, full: str, i: int, start: int) -> int:
    """How many characters of `full` from `start` message i renders, up to where the next message begins.

    The turn's text T is message i rendered as the last message. When `full` does not continue
    with T, two things can differ. The turn may end with another marker when more follows
    (harmony's `<|end|>` where the last turn has `<|return|>`): then it is also rendered as the
    template renders a turn that something follows, render(messages[:i+1], add_generation_prompt=
    True) less the generation prompt. Or the template drops part of an earlier turn (Qwen3's
    reasoning before the last user query): then the turn is the longest suffix of T that `full`
    continues with at `start`.
    """
    if i == len(messages) - 1:
        return len(full) - start
    prefix = full[:start]
    try:
        rendered = r(messages[: i + 1])
    except RowError as err:
        rendered, refusal = None, err
    own = None if rendered is None else _own_text(r, messages, i, rendered, prefix)
    if own is not None:
        if full.startswith(own, start):
            return len(own)
        # A suffix of the turn that `full` continues with ends with the turn's own end marker, so
        # the marker is the same: the template only dropped part of the turn (Qwen3's reasoning).
        if aligned := _longest_suffix_continuing(own, full, start):
            return aligned
    followed = _followed_turn(r, messages, i, prefix)
    if followed is None and own is None:
        raise RowError(
            DropReason.UNLOCATABLE_TURN,
            f"message {i} ({messages[i]['role']}) cannot be located: the template refuses the conversation "
            f"cut after it: {refusal.detail}; or mark it `train: false`, or start the conversation with a user message",
        )
    if followed is None:
        return 0
    if full.startswith(followed, start):
        return len(followed)
    return _longest_suffix_continuing(followed, full, start)


def _own_text(r, messages: list, i: int, rendered: str, prefix: str) -> str:
    """Message i's text in `rendered`, a render of messages[:i+1] (more only where noted).

    Where `rendered` begins as `full` does up to the turn, the turn is what follows that prefix;
    otherwise (the template renders the history otherwise once more follows) it is located in
    `rendered` as in any render that ends with the turn.
    """
    if rendered.startswith(prefix):
        return rendered[len(prefix) :]
    return rendered[_turn_start(r, messages[: i + 1], rendered, i) :]


def _followed_turn(r, messages: list, i: int, prefix: str) -> str | None:
    """Message i's text as the template renders a turn that more messages follow, or None.

    That is render(messages[:i+1], add_generation_prompt=True) less the generation prompt at its
    end (see _generation_prompt).
    """
    prompted = _prompt_or_none(r, messages[: i + 1], True)
    generation = _generation_prompt(r, messages, i)
    if prompted is None or not generation or not prompted.endswith(generation):
        return None
    turn = _own_text(r, messages, i, prompted[: len(prompted) - len(generation)], prefix)
    return turn or None


def _generation_prompt(r, messages: list, i: int) -> str | None:
    """The text add_generation_prompt appends after message i - 1, or None when it cannot be told.

    Where the template renders the last message differently with a prompt after it (harmony), it
    is taken after the nearest prefix of the conversation that renders the same either way.
    """
    for k in [*range(i, -1, -1), *range(i + 1, len(messages))]:
        plain = _prompt_or_none(r, messages[:k], False)
        prompted = _prompt_or_none(r, messages[:k], True)
        if plain is not None and prompted is not None and prompted.startswith(plain):
            return prompted[len(plain) :] or None
    return None


def _history_end(r, messages: list, i: int, full: str, after: int) -> int | None:
    """Where the conversation before message i ends in `full`, when `full` renders it otherwise.

    A template may render an earlier turn differently once more follows (Qwen3 and harmony drop
    the reasoning of turns before the final answer; DeepSeek-V3 moves a later system message to
    the top). What stays is the end of the history: the longest suffix of render(messages[:i])
    that `full` holds after `after`, the point where the two part. Trusted only when it holds the
    whole of message i - 1, as rendered or as its content, so that it cannot be a chance repeat.
    """
    history = r(messages[:i])
    length = _longest_suffix_within(history, full, after)
    if not length:
        return None
    tail = history[len(history) - length :]
    before = _prompt_or_none(r, messages[: i - 1], False)
    content = _content_text(messages[i - 1])
    whole = (
        before is not None and history.startswith(before) and len(before) >= len(history) - length
    )
    if not whole and not (content and content in tail):
        return None
    return full.index(tail, after) + length


def _longest_suffix_within(pattern: str, text: str, after: int) -> int:
    """Length of the longest suffix of `pattern` found anywhere in text[after:].

    A binary search on the length with `str.__contains__` (C, linear): a suffix that occurs has
    every shorter suffix occurring too (inside it), so the lengths that occur are 0..answer.
    Measured 2.6x faster than the character-by-character KMP scan it replaced, same answers.
    """
    hay = text[after:]
    if not pattern or pattern in hay:
        return len(pattern)
    lo, hi = 0, len(pattern) - 1  # pattern[-lo:] occurs (lo = 0 trivially); the whole does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pattern[len(pattern) - mid :] in hay:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _longest_suffix_continuing(turn: str, full: str, start: int) -> int:
    """Length of the longest suffix of `turn` that `full` continues with at `start`.

    Candidates are the places of the window's first character in `turn`, longest suffix first,
    each checked with one C-level `startswith`; past SUFFIX_CANDIDATES of them (a text of one
    repeated character, say) KMP's prefix function answers in linear time instead.
    """
    window = full[start : start + len(turn)]
    if not window:
        return 0
    at = turn.find(window[0])
    for _ in range(SUFFIX_CANDIDATES):
        if at < 0:
            return 0
        if window.startswith(turn[at:]):
            return len(turn) - at
        at = turn.find(window[0], at + 1)
    # Prefix function of window + sep + turn: the border at the end is the longest suffix of `turn`
    # that is a prefix of `window`.
    return min(_prefix_function(window + "\x00" + turn)[-1], len(window))


SUFFIX_CANDIDATES = 64
"""Candidate starts _longest_suffix_continuing tries with str methods before falling back to KMP."""


def _prefix_function(s: str) -> list[int]:
    """KMP's prefix function: pi[k] is the longest proper border of s[: k + 1]."""
    pi = [0] * len(s)
    for k in range(1, len(s)):
        j = pi[k - 1]
        while j and s[k] != s[j]:
            j = pi[j - 1]
        if s[k] == s[j]:
            j += 1
        pi[k] = j
    return pi


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
