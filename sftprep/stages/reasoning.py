"""What happens to an assistant's reasoning (`reasoning_content`, `thinking`, `reasoning`, or a
`<think>...</think>` block opening its content), per `reasoning`:

- train: rendered and trained, as the template renders it (the default);
- context: rendered, but only the final answer and what follows it (the end-of-turn tokens) train;
- drop: removed before rendering, as if the model had answered straight away.

Masks stay computed from the render: in context mode a trained turn starts where its answer
starts in the rendered text, after the reasoning's last occurrence inside that turn.
"""

import re

from sftprep.stages.chat_template import REASONING_FIELDS

THINK_BLOCK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


def reasoning_of(message: dict) -> tuple[str | None, str]:
    """(the reasoning text, the answer) of an assistant message; reasoning None when it has none."""
    content = message.get("content")
    content = content if isinstance(content, str) else ""
    field = next((message[k] for k in REASONING_FIELDS if message.get(k)), None)
    if field is not None:
        return field, content
    block = THINK_BLOCK.match(content)
    if block is not None:
        return block.group(1), content[block.end() :]
    return None, content


def drop_reasoning(messages: tuple) -> tuple:
    """The messages with every assistant's reasoning removed (fields and a leading think block)."""
    out = []
    for message in messages:
        if message.get("role") != "assistant":
            out.append(message)
            continue
        reasoning, answer = reasoning_of(message)
        if reasoning is None:
            out.append(message)
            continue
        kept = {k: v for k, v in message.items() if k not in REASONING_FIELDS}
        out.append({**kept, "content": answer})
    return tuple(out)


def answer_start(full: str, span: tuple[int, int], message: dict) -> int:
    """Where a trained turn's answer starts in the render (context mode): after the last
    occurrence of its reasoning within the span, at its answer text when that follows; the span's
    start when the template did not render the reasoning (Qwen3 drops it from earlier turns)."""
    start, end = span
    reasoning, answer = reasoning_of(message)
    if not reasoning or not reasoning.strip():
        return start
    at = full.rfind(reasoning.strip(), start, end)
    if at < 0:
        return start
    after = at + len(reasoning.strip())
    close = full.find("</think>", after, end)  # the block's closing tag is not the answer
    after = close + len("</think>") if close >= 0 else after
    found = full.find(answer.strip(), after, end) if answer.strip() else -1
    return found if found >= 0 else after
