"""minijinja as a second renderer of a chat template, for the prefix renders that locate turns.

Why: a template that is not prefix-local (prefix_renders.py; Qwen3's own reads the number of
messages) is rendered once per prefix of a conversation to locate its turns, so a conversation
of n messages costs about n renders of up to n messages. minijinja (Rust, by Jinja's author)
renders them ~8x faster than Jinja2 (the 512 prefixes of a 512-message chat with Qwen3's
template: 0.21 vs 1.65 s here), which keeps long agent traces near the per-message cost of short
chats.

What it may change: nothing, and that is checked, not assumed. The text that is tokenized is
always Jinja2's render of the whole conversation; minijinja answers only the renders of prefixes
used to find where each turn begins and ends, only for templates it is safe to run (`auto`: the
published templates of VETTED, proven on the chat corpus; minijinja has no time budget a hostile
template cannot outrun, nor Jinja2's immutable sandbox), only on rows without text the two
renderers treat otherwise (ODD_TEXT, floats, ints past 64 bits), and only where it is shown to render as
Jinja2:
- per template and inputs (`_checked_twin`): every prefix of PROBES, with and without the
  generation prompt, that minijinja renders must be Jinja2's text; otherwise the template
  keeps Jinja2 for every row;
- per row (`row_twin`): minijinja's render of the whole conversation must be Jinja2's, or that
  row's prefixes are rendered by Jinja2;
- the first SAMPLE_FIRST rows of a process that used it, and every SAMPLE_EVERY-th after, have
  their turns located again by Jinja2 alone (render.py); a difference stops the build (a renderer
  that differs is a bug to report, and the rows before may be affected).
A prefix minijinja does not render (any error, its fuel or size budget spent) is rendered by
Jinja2, so a refusal is always Jinja2's own, with its message. Templates minijinja does not
compile (`{% generation %}`, a filter it lacks) keep Jinja2. Config `renderer`: auto (this),
jinja2 (never minijinja), minijinja (any template one trusts, not only VETTED ones, and an error
when minijinja cannot render it).
"""

import hashlib
import os
import re
from collections.abc import Callable

from sftprep.errors import RowError, SftprepError
from sftprep.stages.chat_template import (
    raise_exception,
    render,
    strftime_now,
    template_messages,
    tojson,
)
from sftprep.version import installed

VETTED = frozenset(
    {
        "a4c9919cbbd4acdd51ccffe22da049264b1b73e59055fa58811a99efbd7c8146",  # gpt-oss
        "87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5",  # Qwen3
        "a4aee8afcf2e0711942cf848899be66016f8d14a889ff9ede07bca099c28f715",  # Qwen3.5, thinking
        "273d8e0e683b885071fb17e08d71e5f2a5ddfb5309756181681de4f5a1822d80",  # Qwen3.5
        "e84f32a23fdda27689f868aa4a1a5621f41133e51a48d7f3efcbea2839574259",  # Qwen3.6
        "c3cf9e34abf4f9e36c2d72165aa9c132d3e2a725b6c2586aaa3a8af9d7a81041",  # Qwen3.8
        "3b8267e54b67df6500f231ffa969955cc9d26b3444a291ced4eb96ca7d3ca1ea",  # DeepSeek-V3
        "563b1ce7d61d50a9b4c7439a912a1116f095b712df5b5e4d3e1116049874eb64",  # DeepSeek-V3 (TRL)
        "56a1447ad31926fdc21fb07e56e5642bd9c850c4f52d8c8af7bbe5f079a84f5f",  # DeepSeek-R1 distill
        "ab7813c3abdd9cb655905a410728b26c7884eca45ddfab8d9f931553485a7862",  # Nemotron-3 nano
        "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",  # Llama-3.1
        "5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4",  # Llama-3.2
        "ecd6ae513fe103f0eb62e8ab5bfa8d0fe45c1074fa398b089c93a7e70c15cfd6",  # Gemma-2
        "7de1c58e208eda46e9c7f86397df37ec49883aeece39fb961e0a6b24088dd3c4",  # Gemma-3
        "26a59556925c987317ce5291811ba3b7f32ec4c647c400c6cc7e3a9993007ba7",  # Mistral
        "e8d5b5a546d3f19df16a5320c614fab05bdc4edd50e850f1afd947b503ea41cf",  # Llama-2
    }
)
"""sha256 of the templates `auto` renders with minijinja: published model templates, each proven
to give Jinja2's spans on the chat corpus (tests/sftprep/stages/test_fast_render.py). Any other
template (a user's, an edited one) keeps Jinja2 under `auto`: minijinja has no time budget a
hostile template cannot outrun (joining a lazily doubled list spends no fuel), and it lets a
template call the methods of the Python values it is given, which Jinja2's immutable sandbox
refuses. `renderer: minijinja` uses it for any template, for templates one trusts."""
ODD_TEXT = re.compile("[\x1c-\x1f\ud800-\udfff]")
"""Characters whose whitespace class or encoding the two renderers disagree on (Python's
str.strip/split and Jinja2's trim treat U+001C..U+001F as space, minijinja does not; lone
surrogates): a row holding one keeps Jinja2. Measured over every code point for the string
operations the vetted templates use (strip, lstrip, rstrip, split, trim, length, startswith,
endswith): these are the only differences (upper and lower also differ on ~110 letters of
recent Unicode versions; no vetted template calls them)."""
MIN_COMPARED = 8
"""Probe renders both renderers must give (each template renders at least this many)."""
MIN_MESSAGES = 4
"""Rows with fewer messages keep Jinja2: their few prefix renders cost less than the row check."""
TWINS_KEPT = 16
"""Sets of template variables a template keeps a verdict for (a build has one or two)."""
SAMPLE_FIRST = 1
SAMPLE_EVERY = 64
FUEL_PER_SECOND = 40_000_000
"""minijinja's instructions per second here (measured): its fuel stands for the time budget."""

_CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
PROBES = (
    (None, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]),
    (
        None,
        [
            {"role": "system", "content": "Be brief.\n"},
            {"role": "user", "content": " What is 2+2? "},
            {"role": "assistant", "content": "4", "reasoning_content": "Add them.\n"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "<think>\nAdd.\n</think>\n\n6"},
            {"role": "user", "content": "<tool_response>x</tool_response>"},
            {"role": "assistant", "content": ""},
        ],
    ),
    (
        _TOOLS,
        [
            {"role": "user", "content": "Weather in Paris, ünïcode 🙂?"},
            {"role": "assistant", "content": "", "tool_calls": [_CALL]},
            {"role": "tool", "content": '{"temp": 21}'},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "21 °C and sunny.", "reasoning_content": "Read it."},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "You're welcome.  "},
        ],
    ),
    (
        None,
        [
            {"role": "assistant", "content": "I start."},
            {"role": "user", "content": "ok"},
            {"role": "system", "content": "late system"},
            {"role": "assistant", "content": "{{ not a template }} {% raw %}"},
        ],
    ),
)
"""Conversations whose every prefix both renderers must render alike: the branches templates take
(system first and late, reasoning as a field and inline, tool calls and responses, empty and
padded content, an assistant first, template syntax in content)."""


def fingerprint_part(mode: str) -> list:
    """What the build fingerprint holds of the renderer: the mode asked and the minijinja version
    that could answer it."""
    return [mode, None if mode == "jinja2" else installed("minijinja")]


def require_renderer(mode: str, source: str | None, seconds: float) -> None:
    """For renderer `minijinja`: an SftprepError when minijinja is missing or cannot compile the
    template with a render budget of `seconds` (auto then quietly keeps Jinja2)."""
    if mode != "minijinja" or not source:
        return
    env, problem = _compiled(source, seconds)
    if env is None:
        raise SftprepError(
            f"renderer minijinja: {problem}; use --renderer auto (Jinja2 where minijinja cannot)"
        )


def row_twin(template, messages: list, tools, variables: dict, full: str) -> Callable | None:
    """A function rendering prefixes of this row with minijinja (`render(prefix, gen)`: the text,
    or None where Jinja2 must render it), or None when this row keeps Jinja2 (module docstring)."""
    if template.renderer == "jinja2" or len(messages) < MIN_MESSAGES:
        return None
    if template.renderer == "auto" and not _vetted(template):
        return None
    if _odd(messages) or _odd(tools):
        return None
    twin = _checked_twin(template, variables)
    if twin is None or twin(messages, tools, False) != full:
        return None
    return lambda prefix, gen: twin(prefix, tools, gen)


def _vetted(template) -> bool:
    if template.vetted is None:
        template.vetted = hashlib.sha256(template.source.encode()).hexdigest() in VETTED
    return template.vetted


def _odd(value) -> bool:
    """Whether a row's value holds text the renderers may render otherwise (ODD_TEXT), or a number
    they may write otherwise: any float (Python writes 1e+20 and 1.0 where minijinja writes
    100000000000000000000.0, or hands 1 to tojson) or an int past 64 bits (minijinja's become
    floats past 128)."""
    if isinstance(value, str):
        return ODD_TEXT.search(value) is not None
    if isinstance(value, float):
        return True
    if isinstance(value, int):
        return not -(2**63) <= value < 2**63
    if isinstance(value, dict):
        return any(_odd(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_odd(v) for v in value)
    return False


def sample_due(template) -> bool:
    """Whether this row, which used minijinja, must be located again by Jinja2 alone (counted
    per process: a forked worker starts again from its first row)."""
    if template.twin_pid != os.getpid():
        template.twin_pid, template.twin_rows = os.getpid(), 0
    template.twin_rows += 1
    return template.twin_rows <= SAMPLE_FIRST or template.twin_rows % SAMPLE_EVERY == 0


def _checked_twin(template, variables: dict) -> Callable | None:
    """minijinja's render(messages, tools, gen) of `template` for these variables, once PROBES
    agree (cached per variables), or None."""
    key = tuple(sorted((name, repr(value)) for name, value in variables.items()))
    if key not in template.twins:
        if len(template.twins) >= TWINS_KEPT:
            return None  # per-row template kwargs: each new set would cost the probes again
        env, problem = _compiled(template.source, template.environment.render_seconds)
        twin = None if env is None else _twin(env, variables, template.environment.max_chars)
        if twin is not None and not _agrees(template, twin, variables):
            if template.renderer == "minijinja":
                raise SftprepError(
                    "renderer minijinja: it renders the chat template otherwise than Jinja2 on "
                    "sftprep's probe conversations; use --renderer auto"
                )
            twin = None
        template.twins[key] = twin
    return template.twins[key]


def _twin(env, variables: dict, max_chars: int) -> Callable:
    def twin(messages, tools, gen):
        try:
            text = env.render_template(
                "chat",
                messages=messages,
                tools=tools,
                documents=None,
                add_generation_prompt=gen,
                **variables,
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a refusal, spent fuel, or a Rust panic (not an Exception)
            return None
        return text if len(text) <= max_chars else None

    return twin


def _agrees(template, twin: Callable, variables: dict) -> bool:
    """Whether every prefix of PROBES minijinja renders is Jinja2's text for it, and at least
    MIN_COMPARED of them were compared (else nothing would be shown)."""
    compared = 0
    for tools, conversation in PROBES:
        messages = template_messages(conversation)
        for k in range(len(messages) + 1):
            for gen in (False, True):
                fast = twin(messages[:k], tools, gen)
                if fast is None:
                    continue
                try:
                    exact = render(template, messages[:k], tools, variables, gen)
                except RowError:
                    return False  # minijinja rendered what Jinja2 refuses
                if fast != exact:
                    return False
                compared += 1
    return compared >= MIN_COMPARED


_ENVIRONMENTS: dict = {}
"""(template source, seconds) -> (minijinja Environment | None, why not)."""


def _compiled(source: str, seconds: float):
    """A minijinja Environment holding the template as "chat", set up as chat_template.py sets up
    Jinja2 (trim_blocks, lstrip_blocks, transformers' tojson, raise_exception, strftime_now), with
    fuel for `seconds`; or (None, why not)."""
    key = (source, seconds)
    if key not in _ENVIRONMENTS:
        try:
            import minijinja
        except ImportError:
            _ENVIRONMENTS[key] = (None, "minijinja is not installed (pip install minijinja)")
            return _ENVIRONMENTS[key]
        env = minijinja.Environment()
        env.trim_blocks = True
        env.lstrip_blocks = True
        env.fuel = int(seconds * FUEL_PER_SECOND)
        env.add_filter("tojson", tojson)
        env.add_function("raise_exception", raise_exception)
        env.add_function("strftime_now", strftime_now)
        try:
            env.add_template("chat", source)
        except Exception as err:  # noqa: BLE001 - minijinja's TemplateError, or a panic
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            _ENVIRONMENTS[key] = (None, f"minijinja does not compile the chat template ({first})")
        else:
            _ENVIRONMENTS[key] = (env, "")
    return _ENVIRONMENTS[key]
