"""Detect each source's format and normalize every row into one canonical Example.

| format            | columns                                             | becomes                    |
|-------------------|-----------------------------------------------------|----------------------------|
| text              | `text`                                              | Example(kind="text")       |
| messages          | `messages` of {role, content}                        | Example(kind="chat")       |
| sharegpt          | `conversations` of {from, value}                     | Example(kind="chat")       |
| prompt-completion | `prompt` + `completion`, strings                     | Example(kind="completion") |
| prompt-completion | `prompt` + `completion`, message lists               | Example(kind="chat"), prompt turns untrained |
| alpaca            | `instruction` (+ `input`, `system`, `history`) + `output` | Example(kind="chat"), prompt turns untrained |
| prompt-template   | any columns, through --prompt-template/--completion-template | completion (or text) |
| formatter         | any columns, through --formatter module:function    | whatever it returns        |
"""

import dataclasses
import importlib
import json
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sftprep.config import RESERVED_KWARGS, BuildConfig
from sftprep.drop_reasons import DropReason
from sftprep.errors import RowError, SftprepError
from sftprep.stages.json_errors import limit_error
from sftprep.stages.reasoning import drop_reasoning
from sftprep.stages.response_spans import response_spans

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "function_response": "tool",
    "observation": "tool",
    "ipython": "tool",
}
ROLES = ("system", "user", "assistant", "tool", "developer")
TEMPLATE_KWARGS_COLUMN = "chat_template_kwargs"


@dataclass(frozen=True)
class Example:
    """One training example in canonical form, before rendering."""

    kind: str
    """text | completion | chat"""
    text: str = ""
    prompt: str = ""
    completion: str = ""
    messages: tuple = ()
    """Canonical message dicts: role, content, and optional tool_calls, reasoning_content, train, ..."""
    tools: list | None = None
    prompt_messages: int = -1
    """For a conversational prompt/completion: how many leading messages are the prompt; -1 otherwise."""
    spans: tuple | None = None
    """For a text: the character spans that train (response_template); None: all of it."""
    template_kwargs: dict | None = None
    """The row's own `chat_template_kwargs` column, over the source's."""


@dataclass(frozen=True)
class FormatSpec:
    """What a source's rows hold and where: the detected format and its column names."""

    name: str
    fields: dict
    loss_on: str = "assistant"
    """Which turns train (the source's `loss_on`, else the global one)."""
    system_prompt: str | None = None
    """Prepended as a system message to every conversation that has none."""
    response_template: str | None = None
    """On a text: train only what follows this marker (response_spans.py)."""
    instruction_template: str | None = None
    """On a text with response_template: a response ends where this marker begins."""
    id_markers: tuple | None = None
    """On a text: (response ids, instruction ids) matched on the token ids (response_spans.id_spans)."""
    reasoning: str = "train"
    """train | context | drop: what an assistant's reasoning becomes (reasoning.py)."""
    chat_template_kwargs: dict | None = None
    """Extra variables the chat template sees, as apply_chat_template(**kwargs) passes them."""


def detect_format(columns: list[str], config: BuildConfig, source: str) -> FormatSpec:
    """Pick the format from the columns of a source (its schema or first row) and the config (the
    source's own, source_settings.source_config), with the settings that shape its examples."""
    spec = dataclasses.replace(
        _detect(columns, config, source),
        loss_on=config.loss_on,
        system_prompt=config.system_prompt,
        response_template=config.response_template,
        instruction_template=config.instruction_template,
        id_markers=(config.response_template_ids, config.instruction_template_ids)
        if config.response_template_ids
        else None,
        reasoning=config.reasoning,
        chat_template_kwargs=config.chat_template_kwargs or None,
    )
    if (spec.response_template is not None or spec.id_markers) and spec.name != "text":
        raise SftprepError(
            f"{source}: {'response_template' if spec.id_markers is None else 'response_template_ids'}"
            f" applies to text, but this source is {spec.name} "
            "(its masks come from the format itself); drop it for this source, or set format: text"
        )
    return spec


def _detect(columns: list[str], config: BuildConfig, source: str) -> FormatSpec:
    cols = set(columns)
    if config.formatter:
        return FormatSpec("formatter", {"function": config.formatter})
    if config.prompt_template:
        return FormatSpec(
            "prompt-template",
            {"prompt": config.prompt_template, "completion": config.completion_template},
        )
    wanted = config.format
    messages_field = config.messages_field or next(
        (c for c in ("messages", "conversations") if c in cols), None
    )
    prompt_field = config.prompt_field or "prompt"
    completion_field = config.completion_field or "completion"
    text_field = config.text_field or "text"
    if wanted in ("auto", "messages") and messages_field in cols:
        name = (
            "sharegpt"
            if messages_field == "conversations" and not config.messages_field
            else "messages"
        )
        return FormatSpec(name, {"messages": messages_field, "tools": "tools"})
    if wanted in ("auto", "prompt-completion"):
        if prompt_field in cols and completion_field in cols:
            return FormatSpec(
                "prompt-completion",
                {"prompt": prompt_field, "completion": completion_field, "tools": "tools"},
            )
        if (
            "instruction" in cols
            and "output" in cols
            and not (config.prompt_field or config.completion_field)
        ):
            return FormatSpec("alpaca", {})
    if wanted in ("auto", "text") and text_field in cols:
        return FormatSpec("text", {"text": text_field})
    expected = {
        "auto": "a `text`, `messages`, `conversations`, `prompt`+`completion` or `instruction`+`output` column",
        "text": f"a `{text_field}` column",
        "messages": f"a `{messages_field or 'messages'}` column",
        "prompt-completion": f"`{prompt_field}` and `{completion_field}` columns",
    }[wanted]
    raise SftprepError(
        f"{source}: cannot detect the format (--format {wanted}): expected {expected}, found columns "
        f"{', '.join(sorted(cols)) or '(none)'}; name yours with --text-field, --messages-field, "
        "--prompt-field/--completion-field, or use --prompt-template / --formatter"
    )


def make_normalizer(spec: FormatSpec) -> Callable[[dict], Example]:
    """A function turning one row of this format into an Example (raises RowError on a bad row),
    then the source's settings applied in turn: the row's template kwargs, reasoning dropped,
    response spans of a text, a system prompt for conversations that have none."""
    normalize = _with_row_kwargs(_format_normalizer(spec))
    if spec.reasoning == "drop":
        normalize = _without_reasoning(normalize)
    if spec.response_template is not None:
        normalize = _with_response_spans(
            normalize, spec.response_template, spec.instruction_template
        )
    if spec.system_prompt is not None:
        normalize = _with_system_prompt(normalize, spec.system_prompt)
    return normalize


def _with_system_prompt(normalize, prompt: str):
    system = {"role": "system", "content": prompt}

    def with_system_prompt(row: dict) -> Example:
        example = normalize(row)
        if example.kind != "chat" or (example.messages and example.messages[0]["role"] == "system"):
            return example
        shift = 1 if example.prompt_messages >= 0 else 0
        return dataclasses.replace(
            example,
            messages=(system, *example.messages),
            prompt_messages=example.prompt_messages + shift,
        )

    return with_system_prompt


def _without_reasoning(normalize):
    def without(row: dict) -> Example:
        example = normalize(row)
        if example.kind != "chat":
            return example
        return dataclasses.replace(example, messages=drop_reasoning(example.messages))

    return without


def _with_row_kwargs(normalize):
    """A row's `chat_template_kwargs` column (a mapping, or JSON text of one) reaches its render."""

    def with_kwargs(row: dict) -> Example:
        example = normalize(row)
        raw = row.get(TEMPLATE_KWARGS_COLUMN)
        if raw is None or example.kind != "chat":
            return example
        if isinstance(raw, str):
            raw = loads_field(raw, TEMPLATE_KWARGS_COLUMN, DropReason.BAD_FIELD_TYPE, "a mapping")
        if not isinstance(raw, dict) or (reserved := RESERVED_KWARGS & set(raw)):
            what = (
                f"holds {', '.join(sorted(reserved))}"
                if isinstance(raw, dict)
                else f"is {type(raw).__name__}"
            )
            raise RowError(
                DropReason.BAD_FIELD_TYPE,
                f"`{TEMPLATE_KWARGS_COLUMN}` {what}; it must be a mapping of template variables "
                f"other than {', '.join(sorted(RESERVED_KWARGS))}",
            )
        return dataclasses.replace(example, template_kwargs=raw)

    return with_kwargs


def _with_response_spans(normalize, response: str, instruction: str | None):
    def with_spans(row: dict) -> Example:
        example = normalize(row)
        spans = response_spans(example.text, response, instruction)
        return dataclasses.replace(example, spans=spans)

    return with_spans


def _format_normalizer(spec: FormatSpec) -> Callable[[dict], Example]:
    if spec.name == "text":
        return lambda row: _text_example(_field(row, spec.fields["text"]))
    if spec.name in ("messages", "sharegpt"):
        return lambda row: Example(
            "chat",
            messages=normalize_messages(_field(row, spec.fields["messages"])),
            tools=_tools(row, spec.fields["tools"]),
        )
    if spec.name == "prompt-completion":
        return lambda row: _prompt_completion(
            _field(row, spec.fields["prompt"]),
            _field(row, spec.fields["completion"]),
            _tools(row, spec.fields["tools"]),
        )
    if spec.name == "alpaca":
        return _alpaca_example
    if spec.name == "prompt-template":
        return _template_normalizer(spec.fields["prompt"], spec.fields["completion"])
    if spec.name == "formatter":
        return _formatter_normalizer(load_formatter(spec.fields["function"]))
    raise AssertionError(spec.name)


def _field(row: dict, name: str):
    if name not in row or row[name] is None:
        raise RowError(
            DropReason.MISSING_FIELD,
            f"the `{name}` field is missing or null; fill it or drop the row",
        )
    return row[name]


def _text_example(text) -> Example:
    if not isinstance(text, str):
        raise RowError(
            DropReason.BAD_FIELD_TYPE, f"text must be a string, got {type(text).__name__}"
        )
    if not text:
        raise RowError(DropReason.EMPTY_TEXT, "the text is empty; drop the row")
    return Example("text", text=text)


def _content_text(content, where: str) -> str:
    """Message content as text: a string, or OpenAI-style parts [{"type": "text", "text": ...}]."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif (
                isinstance(part, dict)
                and part.get("type", "text") == "text"
                and isinstance(part.get("text"), str)
            ):
                pieces.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RowError(
                    DropReason.UNSUPPORTED_CONTENT,
                    f"{where}: content part of type {kind!r} is not text; only text parts are supported",
                )
        return "".join(pieces)
    raise RowError(
        DropReason.BAD_FIELD_TYPE,
        f"{where}: content must be a string or a list of text parts, got {type(content).__name__}",
    )


def loads_field(text: str, name: str, reason: DropReason, wanted: str):
    """A column holding JSON text, parsed; a RowError for text that is not JSON, nests too deep, or
    holds a number too long to convert (never a traceback)."""
    try:
        return json.loads(text)
    except (RecursionError, ValueError) as err:  # ValueError: JSONDecodeError, a huge integer
        limit = limit_error(err, f"`{name}`")
        if limit is not None:
            raise limit from None
        raise RowError(
            reason, f"`{name}` is a string that is not usable JSON ({err}); it must be {wanted}"
        ) from None


def normalize_messages(raw) -> tuple:  # noqa: C901, PLR0912 - one check per way a message can be wrong
    """Canonical messages from {role, content} or ShareGPT {from, value} dicts; checks every message."""
    if isinstance(raw, str):
        raw = loads_field(raw, "messages", DropReason.BAD_FIELD_TYPE, "a list of messages")
    if not isinstance(raw, (list, tuple)):
        raise RowError(
            DropReason.BAD_FIELD_TYPE, f"messages must be a list, got {type(raw).__name__}"
        )
    if not raw:
        raise RowError(
            DropReason.EMPTY_CONVERSATION, "the conversation has no messages; drop the row"
        )
    out = []
    for i, message in enumerate(raw):
        where = f"message {i}"
        if not isinstance(message, dict):
            raise RowError(
                DropReason.BAD_MESSAGE,
                f"{where} must be an object with role and content, got {type(message).__name__}",
            )
        # None-valued keys are dropped, as apply_chat_template drops them: `content: null` beside
        # `tool_calls` reaches the template as no content at all, never as "".
        message = {k: v for k, v in message.items() if v is not None}
        if "role" in message:
            role = message.pop("role")
        elif "from" in message:
            role = message.pop("from")
            role = SHAREGPT_ROLES.get(role.lower(), role) if isinstance(role, str) else role
        else:
            raise RowError(
                DropReason.BAD_MESSAGE,
                f"{where} has no `role` (or ShareGPT `from`); keys: {', '.join(sorted(message))}",
            )
        if role not in ROLES:
            raise RowError(
                DropReason.UNKNOWN_ROLE,
                f"{where} has role {role!r}; use one of {', '.join(ROLES)} (ShareGPT: human, gpt, system, tool)",
            )
        value = message.pop("value", None)  # ShareGPT
        if "content" not in message and value is not None:
            message["content"] = value
        if "content" not in message and not message.get("tool_calls"):
            raise RowError(
                DropReason.MISSING_CONTENT,
                f"{where} ({role}) has no content; give it one or drop the row",
            )
        if "content" in message:
            message["content"] = _content_text(message["content"], where)
        clean = {"role": role, **message}
        if "tool_calls" in clean:
            clean["tool_calls"] = _check_tool_calls(clean["tool_calls"], where)
        if "train" in clean and not isinstance(clean["train"], bool):
            raise RowError(
                DropReason.BAD_FIELD_TYPE,
                f"{where}: `train` must be true or false, got {clean['train']!r}",
            )
        out.append(clean)
    return tuple(out)


def _check_tool_calls(calls, where: str) -> list:
    if not isinstance(calls, list):
        raise RowError(
            DropReason.BAD_TOOL_CALLS,
            f"{where}: tool_calls must be a list, got {type(calls).__name__}",
        )
    for j, call in enumerate(calls):
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or "arguments" not in fn:
            raise RowError(
                DropReason.BAD_TOOL_CALLS,
                f'{where}: tool_calls[{j}] needs a function name and arguments, e.g. {{"function": {{"name": "f", "arguments": {{}}}}}}',
            )
        if not isinstance(fn["arguments"], (str, dict)):
            raise RowError(
                DropReason.BAD_TOOL_CALLS,
                f"{where}: tool_calls[{j}].arguments must be an object or a JSON string",
            )
    return calls


def _tools(row: dict, name: str | None):
    if not name or row.get(name) is None:
        return None
    tools = row[name]
    if isinstance(tools, str):
        tools = loads_field(tools, "tools", DropReason.BAD_TOOLS, "a list of tool schemas")
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RowError(DropReason.BAD_TOOLS, "`tools` must be a list of JSON tool schemas")
    return tools or None


def _prompt_completion(prompt, completion, tools=None) -> Example:
    for name, value in (("prompt", prompt), ("completion", completion)):
        if not isinstance(value, (str, list, tuple)):
            raise RowError(
                DropReason.BAD_FIELD_TYPE,
                f"`{name}` must be a string or a list of messages, got {type(value).__name__}",
            )
    if isinstance(prompt, str) and isinstance(completion, str):
        if not completion:
            raise RowError(DropReason.EMPTY_COMPLETION, "the completion is empty; drop the row")
        return Example("completion", prompt=prompt, completion=completion)
    prompt_messages = (
        normalize_messages(prompt)
        if not isinstance(prompt, str)
        else ({"role": "user", "content": prompt},)
    )
    if isinstance(completion, str):
        completion_messages = ({"role": "assistant", "content": completion},)
    else:
        completion_messages = normalize_messages(completion)
    return Example(
        "chat",
        messages=prompt_messages + completion_messages,
        tools=tools,
        prompt_messages=len(prompt_messages),
    )


def _alpaca_example(row: dict) -> Example:
    instruction, output = _field(row, "instruction"), _field(row, "output")
    extra = row.get("input") or ""
    for name, value in (("instruction", instruction), ("output", output), ("input", extra)):
        if not isinstance(value, str):
            raise RowError(
                DropReason.BAD_FIELD_TYPE, f"`{name}` must be a string, got {type(value).__name__}"
            )
    if not output:
        raise RowError(DropReason.EMPTY_COMPLETION, "`output` is empty; drop the row")
    prompt = []
    if isinstance(row.get("system"), str) and row["system"]:
        prompt.append({"role": "system", "content": row["system"]})
    for pair in row.get("history") or []:
        if not (
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(isinstance(p, str) for p in pair)
        ):
            raise RowError(
                DropReason.BAD_FIELD_TYPE,
                "`history` must be a list of [user, assistant] string pairs",
            )
        prompt += [
            {"role": "user", "content": pair[0], "train": False},
            {"role": "assistant", "content": pair[1], "train": False},
        ]
    prompt.append({"role": "user", "content": instruction + ("\n\n" + extra if extra else "")})
    return Example(
        "chat",
        messages=tuple(prompt) + ({"role": "assistant", "content": output},),
        prompt_messages=len(prompt),
    )


def _template_normalizer(
    prompt_template: str, completion_template: str | None
) -> Callable[[dict], Example]:
    names = {
        f
        for t in (prompt_template, completion_template or "")
        for _, f, _, _ in string.Formatter().parse(t)
        if f
    }

    def normalize(row: dict) -> Example:
        missing = sorted(n for n in names if n not in row)  # plain names only (config checks it)
        if missing:
            raise RowError(
                DropReason.MISSING_FIELD,
                f"--prompt-template/--completion-template use {', '.join(missing)}, which this row lacks",
            )
        prompt = prompt_template.format_map(row)
        if completion_template is None:
            return _text_example(prompt)
        return _prompt_completion(prompt, completion_template.format_map(row))

    return normalize


def load_formatter(spec: str) -> Callable:
    """Import `module:function` (the current folder is importable). Only called when --formatter is given."""
    module_name, _, attr = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SftprepError(f"--formatter {spec}: cannot import {module_name} ({err})") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise SftprepError(f"--formatter {spec}: {module_name} has no function {attr}")
    return function


def _formatter_normalizer(function: Callable) -> Callable[[dict], Example]:
    def normalize(row: dict) -> Example:
        try:
            result = function(row)
        except Exception as err:
            raise RowError(
                DropReason.FORMATTER_ERROR, f"--formatter raised {type(err).__name__}: {err}"
            ) from None
        if isinstance(result, str):
            return _text_example(result)
        if isinstance(result, dict) and "prompt" in result and "completion" in result:
            return _prompt_completion(result["prompt"], result["completion"], result.get("tools"))
        if isinstance(result, dict) and "messages" in result:
            return Example(
                "chat", messages=normalize_messages(result["messages"]), tools=result.get("tools")
            )
        if isinstance(result, list):
            return Example("chat", messages=normalize_messages(result))
        raise RowError(
            DropReason.FORMATTER_ERROR,
            f"--formatter returned {type(result).__name__}; return text, {{prompt, completion}} or a list of messages",
        )

    return normalize
