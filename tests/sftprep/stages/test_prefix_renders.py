"""Every prefix's render read off one render (prefix_renders.py), proven equal to rendering each
prefix: on every template family we claim and on the small templates that break the usual
assumptions, for real multi-turn chats (tests/sftprep/chat_corpus.py)."""

import jinja2
import pytest

from sftprep.errors import RowError
from sftprep.stages.chat_template import (
    compile_template,
    render,
    set_renderer,
    template_messages,
)
from sftprep.stages.formats import Example, normalize_messages
from sftprep.stages.prefix_renders import Watched, layout_of, prefix_local_problem
from sftprep.stages.render import render_example
from sftprep.stages.tokenizer import load_tokenizer
from tests.conftest import shared_tokenizer, trl_template
from tests.sftprep.chat_corpus import chats
from tests.sftprep.stages.test_turn_location import HARMONY, PREFILL, SYSTEM_FIRST
from tests.sftprep.test_template_families import ACCEPTED_DROPS, FAMILIES

ROWS = chats(60)
SMALL = {"harmony": HARMONY, "prefill": PREFILL, "system_first": SYSTEM_FIRST}
# TRL's Qwen2.5 template (the prep benchmark's): it looks ahead only in tool messages
EXTRA = {"qwen2_5": ("qwen3", "qwen2_5_training", None, ())}
# the families whose rows mostly take the one-render path (the rest look ahead on every row)
FAST = {"gemma2", "mistral", "qwen2_5"}
# a loop that filters the messages and reads `loop.last`
FILTERED = (
    "{% for m in messages if m.role != 'system' %}<{{ m.role }}>{% if loop.last %}LAST:{% endif %}"
    "{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)


def _source(family: str) -> tuple[str, dict]:
    """A family's template text and the variables it renders with."""
    if family in SMALL:
        return SMALL[family], {}
    tok_name, template_name, _, _ = {**FAMILIES, **EXTRA}[family]
    template = trl_template(template_name) if template_name else None
    tokenizer = load_tokenizer(
        str(shared_tokenizer(tok_name)), str(template) if template else None, None
    )
    return tokenizer.chat_template, dict(tokenizer.special_tokens)


def _forced(source: str, problem: str, renderer: str = "jinja2"):
    """The compiled template with its verdict replaced (a copy: the cached one stays as it is),
    its prefixes rendered by `renderer` (fast_render.py)."""
    template = compile_template(source).environment.from_string(source)
    template.globals = compile_template(source).globals
    template.prefix_problem = problem
    template.tail_names = None if problem else compile_template(source).tail_names
    template.tail_inputs = None if problem else compile_template(source).tail_inputs
    template.tails = {}
    set_renderer(template, source, renderer)
    return template


def _rendered(example, template, variables):
    try:
        return render_example(example, "assistant", template, variables)
    except RowError as err:
        return err.reason, err.detail


ALL = [*FAMILIES, *EXTRA, *SMALL]


@pytest.mark.parametrize("family", ALL)
def test_spans_equal_those_of_rendering_every_prefix(family):
    """The build's spans (one render where the template is prefix-local) equal the per-prefix
    ones. So do the spans with the syntax check's verdict overridden on every family it refuses:
    the watched list alone then sends each row that looks ahead to the per-prefix renders (the
    syntax check stays, for what a list cannot see: `messages|tojson`, state read after the loop)."""
    source, variables = _source(family)
    exact = _forced(source, "the per-prefix renders, for reference")
    forced = _forced(source, "")
    fast_rows = rendered_rows = 0
    for row in ROWS:
        example = Example(
            "chat", messages=normalize_messages(row["messages"]), tools=row.get("tools")
        )
        want = _rendered(example, exact, variables)
        if (family, row["kind"]) not in ACCEPTED_DROPS:  # loop steps build those rows
            assert _rendered(example, compile_template(source), variables) == want, (
                family,
                row["kind"],
            )
        assert _rendered(example, forced, variables) == want, (family, row["kind"])
        fast_rows += _layout(forced, example, variables) is not None
        rendered_rows += not isinstance(want, tuple)
    if family in FAST:  # not vacuous: the fast path ran
        assert fast_rows >= rendered_rows * 3 // 4 and rendered_rows >= len(ROWS) // 4


def _layout(template, example, variables):
    messages = template_messages(list(example.messages))
    watched = Watched(messages)
    try:
        full = render(template, watched, example.tools, variables)
        first = render(template, messages[:1], example.tools, variables, add_generation_prompt=True)
    except RowError:
        return None
    return layout_of(watched, full, lambda: first)


@pytest.mark.parametrize("family", ALL)
def test_every_prefix_render_read_off_the_full_render_is_the_render_of_that_prefix(family):
    source, variables = _source(family)
    template = compile_template(source)
    checked = 0
    for row in ROWS:
        example = Example(
            "chat", messages=normalize_messages(row["messages"]), tools=row.get("tools")
        )
        layout = _layout(template, example, variables) if not template.prefix_problem else None
        if layout is None:
            continue
        messages = template_messages(list(example.messages))
        for k in range(1, len(messages) + 1):
            for gen in (False, True):
                try:
                    want = render(template, messages[:k], example.tools, variables, gen)
                except RowError:
                    continue
                assert layout.render(k, gen) == want, (family, row["kind"], k, gen)
                checked += 1
    if family in FAST:
        assert checked >= len(ROWS), checked


def test_which_templates_are_prefix_local():
    verdicts = {family: compile_template(_source(family)[0]).prefix_problem for family in ALL}
    for own in ("smollm2", "llama3"):
        source = load_tokenizer(str(shared_tokenizer(own)), None, None).chat_template
        assert compile_template(source).prefix_problem == "", own
    assert verdicts["gemma2"] == verdicts["mistral"] == verdicts["qwen2_5"] == ""
    assert verdicts["prefill"] == ""  # its loop.last is seen by the watched list, on every row
    assert "otherwise than by an index" in verdicts["qwen3"], verdicts["qwen3"]  # messages|length
    assert "sets messages" in verdicts["llama3_1"], verdicts["llama3_1"]
    assert "add_generation_prompt" in verdicts["harmony"], verdicts["harmony"]
    assert "2 loops" in verdicts["system_first"], verdicts["system_first"]


@pytest.mark.parametrize(
    ("template", "says"),
    [
        (
            "{% for m in messages %}{{ m.content }}{% endfor %}{{ messages|length }}",
            "otherwise than",
        ),
        ("{% for m in messages %}{{ loop|length }}{% endfor %}", "loop as a value"),
        ("{% for m in messages %}{% endfor %}{{ messages|tojson }}", "otherwise than"),
        ("{% for m in messages %}{% set x = loop %}{% endfor %}", "loop as a value"),
        (
            "{% if add_generation_prompt %}x{% endif %}{% for m in messages %}{% endfor %}",
            "add_generation_prompt",
        ),
        (
            "{% set ns = namespace(t=0) %}{% for m in messages %}{% set ns.t = 1 %}{% endfor %}{{ ns.t }}",
            "reads ns",
        ),
        ("{% for m in messages %}{% else %}none{% endfor %}", "else"),
        ("{% set messages = messages[1:] %}{% for m in messages %}{% endfor %}", "sets messages"),
        ("{% if 1 %}{% for m in messages %}{% endfor %}{% endif %}", "0 loops"),
        (FILTERED, "filters the messages and reads `loop`"),
    ],
)
def test_a_template_that_could_look_ahead_is_refused_with_the_reason(template, says):
    assert says in prefix_local_problem(compile_template(template), template)


def test_a_filtered_loop_that_reads_loop_keeps_the_per_prefix_renders():
    """LoopContext's look ahead (loop.last) goes through Jinja's filter function, which the
    watched list took for the loop's own step: the prefixes read off the full render printed the
    last message's text after every prefix, and the row was refused where every prefix rendered
    locates its turns."""
    example = Example(
        "chat",
        messages=normalize_messages(
            [{"role": r, "content": c} for r, c in zip(["user", "assistant"] * 2, "abcd")]
        ),
    )
    exact = _rendered(example, _forced(FILTERED, "every prefix rendered"), {})
    assert [exact.text[a:b] for a, b in exact.spans] == ["b", "LAST:d"]
    assert _rendered(example, compile_template(FILTERED), {}) == exact
    unfiltered = FILTERED.replace(" if m.role != 'system'", "")
    assert prefix_local_problem(compile_template(unfiltered), unfiltered) == ""  # loop.last is seen


def test_inner_loops_may_look_ahead_in_their_own_items():
    template = (
        "{% for m in messages %}{% for c in m.calls or [] %}{{ c }}{% if not loop.last %},{% endif %}"
        "{% endfor %}{% endfor %}"
    )
    assert prefix_local_problem(compile_template(template), template) == ""


def test_the_watched_list_records_each_fetch_and_any_read_a_prefix_could_answer_otherwise():
    watched = Watched([{"a": 1}, {"a": 2}])
    sizes = iter([0, 5, 9])
    watched.emitted = lambda: next(sizes)
    assert [m["a"] for m, _ in jinja2.runtime.LoopContext(watched, jinja2.Undefined)] == [1, 2]
    assert watched.fetched_at == [0, 5, 9] and watched.passes == 1 and not watched.unsafe
    assert watched[0] == {"a": 1} and not watched.unsafe
    for read in (len, lambda w: w[-1], lambda w: w[1:], lambda w: list(reversed(w))):
        other = Watched([{"a": 1}, {"a": 2}])
        read(other)
        assert other.unsafe, read
    first = Watched([{"a": 1}, {"a": 2}])
    assert first[1] == {"a": 2} and "messages[1]" in first.unsafe  # before the loop fetched it
    ahead = Watched([{"a": 1}, {"a": 2}])
    loop = jinja2.runtime.LoopContext(ahead, jinja2.Undefined)
    next(loop)
    assert loop.last is False and "fetched ahead" in ahead.unsafe  # loop.last peeks at message 1
    outside = Watched([{"a": 1}])
    list(iter(outside))  # a pass that is not a template's loop
    assert "fetched ahead" in outside.unsafe


def test_a_row_the_watched_render_refuses_is_refused_the_same_by_the_plain_render():
    template = compile_template(
        "{% for m in messages %}{{ raise_exception('no') if m.role == 'tool' else m.content }}{% endfor %}"
    )
    example = Example(
        "chat",
        messages=normalize_messages(
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "tool", "content": "c"},
            ]
        ),
    )
    with pytest.raises(RowError) as err:
        render_example(example, "assistant", template, {})
    assert err.value.reason == "template_error"


LOOKS_AHEAD = {
    "loop.last": "{% if loop.last %}<last>{% endif %}",
    "loop.nextitem": "{{ loop.nextitem.role if loop.nextitem else '' }}",
    "loop.length": "{{ loop.length }}",
    "loop.revindex": "{{ loop.revindex }}",
    "messages[loop.index0 + 1]": "{{ messages[loop.index0 + 1].role if loop.first else '' }}",
}


@pytest.mark.parametrize("read", LOOKS_AHEAD)
def test_a_look_ahead_the_syntax_check_allows_is_seen_by_the_watched_list(read):
    """Templates that pass the syntax check but look ahead while rendering: the row falls back to
    the per-prefix renders, so its spans are exactly theirs (here they differ from the one-render
    guess, which proves the fallback decided them)."""
    source = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}" + LOOKS_AHEAD[read] + "<end>"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    template = compile_template(source)
    assert template.prefix_problem == ""
    chat = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    example = Example("chat", messages=normalize_messages(chat))
    layout = _layout(template, example, {})
    assert layout is None
    assert _rendered(example, template, {}) == _rendered(example, _forced(source, "off"), {})
    watched = Watched(template_messages(list(example.messages)))
    render(template, watched, None, {})
    assert watched.unsafe


def _counting_renders(monkeypatch) -> list:
    """Each render the row's span location asks for, as (messages, add_generation_prompt)."""
    import sftprep.stages.render as render_module

    calls = []

    def counted(template, messages, tools, variables, add_generation_prompt=False):
        calls.append((list.__len__(messages), add_generation_prompt))  # len() marks a Watched
        return render(template, messages, tools, variables, add_generation_prompt)

    monkeypatch.setattr(render_module, "render", counted)
    return calls


def _chat(*roles: str) -> Example:
    return Example(
        "chat",
        messages=normalize_messages(
            [{"role": role, "content": f"{role} {i} text"} for i, role in enumerate(roles)]
        ),
    )


@pytest.mark.parametrize("family", ["smollm2", "qwen2_5"])
def test_one_row_s_generation_prompt_serves_the_next_row_with_one_render(family, monkeypatch):
    """A 2-message row is one render once a row has shown the template's tail (it reads only
    add_generation_prompt after its loop); the spans stay those of rendering every prefix."""
    tok_name = "smollm2" if family == "smollm2" else "qwen3"
    source = (
        load_tokenizer(str(shared_tokenizer(tok_name)), None, None).chat_template
        if family == "smollm2"
        else _source(family)[0]
    )
    variables = _source(family)[1] if family != "smollm2" else {}
    template = _forced(source, "")
    assert template.tail_names == {"add_generation_prompt"}
    exact = _forced(source, "the per-prefix renders, for reference")
    calls = _counting_renders(monkeypatch)
    first = _rendered(_chat("user", "assistant"), template, variables)
    assert len(calls) == 2 and len(template.tails) == 1  # the full render and the prompted prefix
    calls.clear()
    for roles in (("user", "assistant"), ("system", "user", "assistant"), ("user", "assistant")):
        got = _rendered(_chat(*roles), template, variables)
        assert calls == [(len(roles), False)], roles  # the full render only
        assert got == _rendered(_chat(*roles), exact, variables), roles
        calls.clear()
    assert first == _rendered(_chat("user", "assistant"), exact, variables)


TAILS_THAT_VARY = {
    # the tail reads a message: no tail is kept, each row renders its prompted prefix
    "messages[0]": ("{{ messages[0].role }}", [None], False),
    # a list (tools) is no key; None is, and stays apart from it
    "tools": ("{{ tools[0] if tools else 'none' }}", [None, ["t"], None], True),
    # undefined and None render differently ('' and 'None'): two keys
    "undefined or None": ("{{ flag }}", [{}, {"flag": None}, {}], True),
    # 0 == False in Python, not to Jinja's `is false`: two keys
    "0 or False": ("{{ 'no' if flag is false else 'yes' }}", [{"flag": 0}, {"flag": False}], True),
}


@pytest.mark.parametrize("case", TAILS_THAT_VARY)
def test_a_tail_is_reused_only_for_rows_whose_inputs_it_reads_are_equal(case):
    after, inputs, kept = TAILS_THAT_VARY[case]
    source = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}<end>{% endfor %}"
        "{% if add_generation_prompt %}<assistant " + after + ">{% endif %}"
    )
    template = _forced(source, "")
    assert (template.tail_names is not None) == kept
    exact = _forced(source, "the per-prefix renders, for reference")
    rows = [("user", "assistant"), ("system", "user", "assistant"), ("user", "assistant")]
    for roles, value in zip(rows, inputs * 3):
        tools = value if case == "tools" else None
        variables = value if case in ("undefined or None", "0 or False") else {}
        example = _chat(*roles)
        example = Example("chat", messages=example.messages, tools=tools)
        got = _rendered(example, template, variables)
        assert got == _rendered(example, exact, variables), (roles, value)
        assert not isinstance(got, tuple), got
    keys = {"messages[0]": 0, "tools": 1, "undefined or None": 2, "0 or False": 2}[case]
    assert len(template.tails) == keys, template.tails


def test_a_tail_that_renders_a_block_keeps_no_tail():
    """`self.block()` after the loop renders a block of the template, which may read a message:
    no tail is kept, and the spans are those of rendering every prefix."""
    source = (
        "{% block sys %}{% if messages[0].role == 'system' %}[S]{% endif %}{% endblock %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}<end>{% endfor %}"
        "{% if add_generation_prompt %}<assistant{{ self.sys() }}>{% endif %}"
    )
    template = _forced(source, "")
    assert template.tail_names is None
    exact = _forced(source, "the per-prefix renders, for reference")
    for roles in [("user", "assistant"), ("system", "user", "assistant"), ("user", "assistant")]:
        got = _rendered(_chat(*roles), template, {})
        assert got == _rendered(_chat(*roles), exact, {}) and not isinstance(got, tuple), roles
    assert not template.tails
