"""Compile and render chat templates in a sandbox, the way `transformers` renders them.

Templates (the tokenizer's own or a user's file) are untrusted code: they run in Jinja's immutable
sandbox, with no access to files, attributes starting with `_`, or Python internals. The
environment matches `transformers.apply_chat_template` (trim_blocks, lstrip_blocks, loopcontrols,
a `tojson` that does not escape HTML, `raise_exception`, `strftime_now`), so our text is the text
the tokenizer itself would render. `{% generation %}` blocks render their body and mark nothing:
masks never depend on them.
"""

import hashlib
import json
from datetime import datetime
from functools import lru_cache
from importlib import resources

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.runtime
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sftprep.drop_reasons import DropReason
from sftprep.errors import RowError, SftprepError
from sftprep.stages.loop_steps import PROVEN, StepLoop, stepped, steps_problem
from sftprep.stages.prefix_renders import (
    Watched,
    prefix_local_problem,
    tail_names,
    watched_render,
)
from sftprep.stages.render_budget import (
    MAX_RENDER_MB,
    RENDER_SECONDS,
    RenderTimeout,
    checked_binop,
    timed_render,
)

REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
CONTROL_KEYS = ("train",)


class _GenerationTag(jinja2.ext.Extension):
    """Accept `{% generation %}...{% endgeneration %}` and render the body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        if not _needs_call_scope(body):
            return body  # nothing to scope: render the body inline, with no call per block
        # transformers renders the block as a call (its own scope, out of reach of loop controls)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


# Statements that, directly in a `{% generation %}` body (not inside a loop of its own), make
# inlining it differ from transformers' call block: definitions and imports bind names in the
# block's own scope, and a loop control cannot reach out of a call block (transformers then fails
# to compile, and so must we).
_SCOPE_STATEMENTS = (
    jinja2.nodes.Macro,
    jinja2.nodes.Import,
    jinja2.nodes.FromImport,
    jinja2.nodes.Include,
    jinja2.nodes.Break,
    jinja2.nodes.Continue,
)
_CALL_NAMES = frozenset({"caller", "varargs", "kwargs"})


def _needs_call_scope(body: list) -> bool:
    """Whether a `{% generation %}` body could render differently inlined than as a call block.

    It could if it uses the names a call block binds itself (`caller`, `varargs`, `kwargs`), or
    if, outside any loop of its own (a loop body is a scope, so what it sets stays inside), it sets
    a variable (`{% set x %}`, not `{% set ns.x %}`), defines a macro, imports, or breaks a loop.
    """
    names = (name.name for node in body for name in node.find_all(jinja2.nodes.Name))
    return any(name in _CALL_NAMES for name in names) or _binds_in_scope(body)


def _binds_in_scope(nodes) -> bool:
    for node in nodes:
        if isinstance(node, jinja2.nodes.For):
            if _binds_in_scope(node.else_):
                return True
            continue
        if isinstance(node, jinja2.nodes.CallBlock):
            continue  # its body is a function of its own, like a macro's
        if isinstance(node, _SCOPE_STATEMENTS):
            return True
        if isinstance(node, (jinja2.nodes.Assign, jinja2.nodes.AssignBlock)) and not isinstance(
            node.target, jinja2.nodes.NSRef
        ):
            return True
        if _binds_in_scope(node.iter_child_nodes()):
            return True
    return False


class _Namespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore-prefixed attributes."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"templates cannot set underscore attributes ({name!r})"
            )


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with its attribute verdicts remembered per (type, attribute).

    The sandbox asks `is_safe_attribute` on every `x.attr` a template evaluates (`loop.first`,
    `message.content`, `ns.flag`), and the answer costs several isinstance checks against ABCs.
    For the plain types below the answer depends only on the type and the attribute name, so it
    is computed once by the parent class and then looked up; any other type is checked every time.
    """

    intercepted_binops = frozenset({"*", "**"})
    render_seconds = RENDER_SECONDS
    max_chars = MAX_RENDER_MB << 20

    def call_binop(self, context, operator, left, right):
        """Repetition and powers, refused when the result would be huge (render_budget)."""
        if operator in ("*", "**"):
            return checked_binop(operator, left, right, self.max_chars)
        return super().call_binop(context, operator, left, right)

    _CACHEABLE = frozenset(
        {
            str,
            dict,
            list,
            tuple,
            int,
            float,
            bool,
            type(None),
            jinja2.runtime.LoopContext,
            StepLoop,
            _Namespace,
        }
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._verdicts: dict[tuple[type, str], bool] = {}

    def getattr(self, obj, attribute):
        # `message.role` on a plain dict: the parent tries getattr(dict, "role") first, which costs
        # an AttributeError each time; a dict's attributes are those of its type, so when the name
        # is not one of them the parent would end up at obj[attribute] anyway.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj, attr, value):
        kind = type(obj)
        if kind not in self._CACHEABLE:
            return super().is_safe_attribute(obj, attr, value)
        key = (kind, attr)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = super().is_safe_attribute(obj, attr, value)
        return verdict


def raise_exception(message):
    """The template's `raise_exception(message)`: refuse the conversation with that message."""
    raise jinja2.exceptions.TemplateError(message)


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """The template's `tojson` filter, as transformers defines it (no HTML escaping)."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def strftime_now(fmt):
    """The template's `strftime_now(fmt)`: today (template_variables fixes the day)."""
    return datetime.now().strftime(fmt)


def reads_date(source: str | None) -> bool:
    """Whether a template can print the date (it names `strftime_now`; a mention is enough)."""
    return bool(source) and "strftime_now" in source


def template_variables(special_tokens: dict, template_date: str | None) -> dict:
    """What a template sees besides the messages: the special tokens, and `strftime_now` fixed to
    `template_date` (midnight), so the text is the same whichever day the build runs."""
    if template_date is None:
        return dict(special_tokens)
    day = datetime.fromisoformat(template_date)
    return {**special_tokens, "strftime_now": day.strftime}


def _plain_dict(*args, **kwargs):
    return dict(*args, **kwargs)


@lru_cache(maxsize=16)
def compile_template(
    source: str,
    render_seconds: float = RENDER_SECONDS,
    max_mb: int = MAX_RENDER_MB,
    renderer: str = "auto",
) -> jinja2.Template:
    """Compile a chat template once (cached per process), with the time and size budgets of each
    of its renders (config `template_seconds`, `template_max_mb`) and the renderer of its prefix
    renders (config `renderer`, fast_render.py)."""
    env = _Sandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.render_seconds, env.max_chars = render_seconds, max_mb << 20
    env.filters["tojson"] = tojson
    env.globals.update(
        raise_exception=raise_exception,
        strftime_now=strftime_now,
        dict=_plain_dict,
        namespace=_Namespace,
    )
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise SftprepError(
            f"the chat template does not compile: {err.message} (line {err.lineno})"
        ) from None
    except (
        SyntaxError
    ) as err:  # Jinja compiled it to Python that does not compile (a misplaced break)
        raise SftprepError(f"the chat template does not compile: {err.msg}") from None
    # Jinja keeps a template's globals as a ChainMap over the environment's, and copies them into
    # a new dict on every render; a flat dict makes that copy several times cheaper (same names).
    template.globals = dict(template.globals)
    template.prefix_problem = prefix_local_problem(template, source)
    set_renderer(template, source, renderer)
    template.tail_names = (  # prefix-local or stepped (loop_steps.py): the tail reads no message
        tail_names(template, source)
        if not template.prefix_problem or not template.steps_problem
        else None
    )
    template.tails = {}  # tail_key -> tail(True) (prefix_renders.tail_names)
    template.tail_inputs = (  # what known_tail keys on, sorted once rather than per row
        None
        if template.tail_names is None
        else sorted(template.tail_names - {"add_generation_prompt"})
    )
    return template


def set_renderer(template: jinja2.Template, source: str, renderer: str) -> None:
    """The state fast_render.py keeps on a compiled template: its source, the renderer asked
    (config `renderer`), minijinja's render or None per set of variables (`twins`), the rows
    located otherwise than by Jinja2's prefix renders in process `twin_pid`, and whether VETTED
    holds it (None until asked); why its syntax does not allow loop steps (`steps_problem`,
    "" when it does), and its copy that notes them (loop_steps.py), where `renderer` allows them
    and PROVEN holds the template, else None."""
    template.source, template.renderer = source, renderer
    template.twins = {}
    template.twin_rows, template.twin_pid, template.vetted = 0, None, None
    template.steps_problem = steps_problem(template, source)
    proven = renderer != "jinja2" and hashlib.sha256(source.encode()).hexdigest() in PROVEN
    template.stepped = stepped(template, source) if proven and not template.steps_problem else None


def builtin_template(name: str) -> str:
    """Text of a template shipped with sftprep (`chatml`)."""
    return resources.files("sftprep").joinpath("templates", f"{name}.jinja").read_text()


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as the template sees them: None-valued and sftprep control keys dropped, reasoning aliased.

    This mirrors what `apply_chat_template` does to its input, so both render the same text.
    """
    out = []
    for message in messages:
        clean = {k: v for k, v in message.items() if v is not None and k not in CONTROL_KEYS}
        reasoning = next((clean[k] for k in REASONING_FIELDS if clean.get(k) is not None), None)
        if reasoning is not None:
            clean = {"thinking": reasoning, **clean, "reasoning_content": reasoning}
        out.append(clean)
    return out


TAILS_KEPT = 16  # distinct tail keys remembered per template (a build has one or two)
_ABSENT = object()


def known_tail(template: jinja2.Template, tools: list | None, variables: dict):
    """(key, tail(True)) for a render of `template` with these inputs (prefix_renders.tail_names):
    the tail is None until a row with the same key has been laid out, and the key is None when
    the template reads something after its loop that could vary (a message, a list, a function)."""
    if template.tail_inputs is None:
        return None, None
    if not template.tail_inputs:
        return (), template.tails.get(())
    inputs = {"tools": tools, "documents": None, **variables}
    key = []
    for name in template.tail_inputs:
        value = inputs.get(name, template.globals.get(name, _ABSENT))
        if value is _ABSENT:
            key.append((name, None, None))  # undefined: renders unlike None
        elif value is None or isinstance(value, (bool, int, float, str)):
            key.append((name, type(value), value))  # True == 1 == 1.0, but not to Jinja
        else:
            return None, None
    key = tuple(key)
    return key, template.tails.get(key)


def remember_tail(template: jinja2.Template, key, tail: str) -> None:
    """Keep tail(True) of a laid-out row for the rows with the same key (known_tail)."""
    if key is not None and len(template.tails) < TAILS_KEPT:
        template.tails[key] = tail


def render(
    template: jinja2.Template,
    messages: list[dict],
    tools: list | None,
    variables: dict,
    add_generation_prompt: bool = False,
) -> str:
    """Render `messages` (already passed through `template_messages`) to text; `variables` are the
    special tokens and `strftime_now` (see template_variables).

    Raises RowError(`template_error`) when the template rejects the conversation or runs past
    the budgets it was compiled with.
    """
    env = template.environment
    inputs = dict(
        messages=messages,
        tools=tools,
        documents=None,
        add_generation_prompt=add_generation_prompt,
        **variables,
    )
    produce = (
        (lambda: watched_render(template, messages, inputs))
        if isinstance(messages, Watched)
        else (lambda: template.render(**inputs))
    )
    try:
        text = timed_render(produce, env.render_seconds)
    except (RenderTimeout, RecursionError, ArithmeticError, MemoryError) as err:
        what = (
            "recursed too deep"
            if isinstance(err, RecursionError)
            else f"{type(err).__name__}: {err}"
        )
        raise RowError(
            DropReason.TEMPLATE_ERROR,
            f"the chat template failed on this conversation ({what}); fix the template",
        ) from None
    except jinja2.exceptions.SecurityError as err:
        raise RowError(
            DropReason.TEMPLATE_ERROR, f"the chat template tried an unsafe operation: {err}"
        ) from None
    except (
        jinja2.exceptions.TemplateError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
    ) as err:
        raise RowError(
            DropReason.TEMPLATE_ERROR,
            f"the chat template rejected this conversation: {err}; fix the roles/order of the messages "
            "or pass --chat-template FILE",
        ) from None
    if len(text) > env.max_chars:
        raise RowError(
            DropReason.TEMPLATE_ERROR,
            f"the chat template rendered {len(text):,} characters, over the {env.max_chars:,} limit "
            "(config template_max_mb, --template-max-mb); fix the template",
        )
    return text
