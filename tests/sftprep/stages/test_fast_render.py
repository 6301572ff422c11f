"""minijinja for the prefix renders that locate turns (fast_render.py): the same spans as Jinja2
alone on every template family and real multi-turn chats, and each of its checks (the probes,
the row's whole render, the sampled rows) catching a renderer that differs."""

import hashlib
import sys

import pytest

from sftprep.errors import SftprepError
from sftprep.stages import fast_render
from sftprep.stages.chat_template import compile_template
from sftprep.stages.formats import Example, normalize_messages
from sftprep.stages.render import render_example
from sftprep.version import installed
from tests.sftprep.stages.test_prefix_renders import ALL, ROWS, _forced, _rendered, _source

pytest.importorskip("minijinja")

# {% generation %} (TRL's training templates) does not compile in minijinja; the small
# templates of the turn-location tests are no published template (not VETTED): Jinja2 alone
NO_TWIN = {"qwen2_5", "harmony", "prefill", "system_first"}


@pytest.mark.parametrize("renderer", ["auto", "minijinja"])
@pytest.mark.parametrize("family", ALL)
def test_spans_equal_those_of_jinja2_alone(family, renderer):
    source, variables = _source(family)
    exact = _forced(source, "every prefix rendered, by Jinja2", "jinja2")
    twin = _forced(source, "every prefix rendered, by minijinja where it may", renderer)
    twin.stepped = None  # the loop steps (test_loop_steps.py) would locate most of these rows
    for row in ROWS:
        example = Example(
            "chat", messages=normalize_messages(row["messages"]), tools=row.get("tools")
        )
        assert _rendered(example, twin, variables) == _rendered(example, exact, variables), (
            family,
            row["kind"],
        )
    if family == "qwen2_5" or (renderer == "auto" and family in NO_TWIN):
        assert twin.twin_rows == 0
    else:  # not vacuous: minijinja located the turns of most rows
        assert twin.twin_rows >= 6, family


def _chat(*contents):
    roles = ["user", "assistant"]
    return Example(
        "chat",
        messages=normalize_messages(
            [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]
        ),
    )


def _template(source: str, renderer: str = "auto", vetted: bool = True):
    """The template, its prefixes rendered one by one, taken for VETTED (or not)."""
    template = _forced(source, "per-prefix renders", renderer)
    template.vetted = vetted
    return template


def test_vetted_are_the_published_templates_proven_here():
    published = {
        hashlib.sha256(_source(family)[0].encode()).hexdigest()
        for family in ALL
        if family not in NO_TWIN
    }
    assert published == fast_render.VETTED


def test_auto_keeps_jinja2_for_any_other_template():
    template = _template(BASE, vetted=False)
    render_example(_chat("a", "b", "c", "d"), "assistant", template, {})
    assert template.twin_rows == 0 and template.twins == {}
    template = _template(BASE, "minijinja", vetted=False)  # trusted by the user
    render_example(_chat("a", "b", "c", "d"), "assistant", template, {})
    assert template.twin_rows == 1
    assert not _forced(BASE, "", "auto").vetted and not fast_render._vetted(
        _forced(BASE, "", "auto")
    )


@pytest.mark.parametrize(
    "odd",
    [
        "Hello\x1c",
        "a\x1fb",
        {"x": 1e20},
        {"x": 1e-05},
        {"x": float("inf")},
        {"x": 1.0},
        {"x": 2**70},
    ],
)
def test_rows_with_text_the_renderers_split_otherwise_keep_jinja2(odd):
    # minijinja's trim keeps U+001C..U+001F (Python's strip drops them), and writes 1e20 as
    # 100000000000000000000.0: such a row is located by Jinja2 alone
    source = BASE.replace(
        "{{ message.content }}", "{{ message.content|trim if loop.last else message.content }}"
    )
    template = _template(source)
    content = odd if isinstance(odd, str) else str(odd)
    example = _chat("hi", "plain", "more", "bye")
    render_example(example, "assistant", template, {})
    assert template.twin_rows == 1
    if isinstance(odd, str):
        example = _chat("hi", content, "more", "bye")
    else:
        example = Example(
            "chat",
            messages=example.messages,
            tools=[{"type": "function", "function": {"name": "f", "parameters": odd}}],
        )
    assert _rendered(example, template, {}) == _rendered(example, _template(source, "jinja2"), {})
    assert template.twin_rows == 1  # not again


def test_probes_that_compare_nothing_prove_nothing():
    # minijinja has no `center` filter: it renders no probe, and nothing is shown alike
    source = "{{ 'x'|center(3) }}" + BASE
    template = _template(source)
    render_example(_chat("a", "b", "c", "d"), "assistant", template, {})
    assert template.twin_rows == 0 and list(template.twins.values()) == [None]


def test_verdicts_kept_per_template_are_bounded():
    template = _template(BASE)
    for k in range(fast_render.TWINS_KEPT + 3):
        render_example(_chat("a", "b", "c", "d"), "assistant", template, {"k": str(k)})
    assert len(template.twins) == fast_render.TWINS_KEPT
    assert template.twin_rows == fast_render.TWINS_KEPT


def test_a_forked_worker_samples_its_own_first_row(monkeypatch):
    template = _template(BASE)
    assert fast_render.sample_due(template) and not fast_render.sample_due(template)
    monkeypatch.setattr(fast_render.os, "getpid", lambda: -1)  # as in a forked child
    assert fast_render.sample_due(template) and template.twin_rows == 1


BASE = (
    "{% for message in messages %}<|{{ message.role }}|>{{ message.content }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_a_template_minijinja_renders_otherwise_keeps_jinja2():
    source = "{{ range(2) }}" + BASE  # 'range(0, 2)' in Jinja2, '[0, 1]' in minijinja
    template = _template(source)
    example = _chat("a", "b", "c", "d")
    assert _rendered(example, template, {}) == _rendered(example, _template(source, "jinja2"), {})
    assert template.twin_rows == 0 and list(template.twins.values()) == [None]
    with pytest.raises(SftprepError, match="renderer minijinja: it renders the chat template"):
        render_example(example, "assistant", _template(source, "minijinja"), {})


def test_a_row_minijinja_renders_otherwise_keeps_jinja2():
    # only this row's content (not the probes') takes the branch where the renderers differ
    source = BASE.replace(
        "{{ message.content }}",
        "{{ message.content }}{% if message.content == 'odd' %}{{ range(2) }}{% endif %}",
    )
    template = _template(source)
    odd, plain = _chat("a", "odd", "c", "d"), _chat("a", "b", "c", "d")
    assert _rendered(odd, template, {}) == _rendered(odd, _template(source, "jinja2"), {})
    assert template.twin_rows == 0  # the row's whole render differed: Jinja2 located its turns
    render_example(plain, "assistant", template, {})
    assert template.twin_rows == 1


def test_a_prefix_minijinja_renders_otherwise_stops_the_build():
    # the renderers differ only in the generation prompt after an 'odd' message (minijinja's is
    # shorter, and still a prefix of the whole render): in a prefix, never in the whole render or
    # the probes; the first row that used minijinja is located again by Jinja2
    odd = "messages[-1].content == 'odd' and (range(0)|string) == '[]'"
    source = BASE.replace(
        "<|assistant|>{% endif %}",
        "{% if " + odd + " %}<|assist{% else %}<|assistant|>{% endif %}{% endif %}",
    )
    example = _chat("odd", "b", "c", "d")
    assert isinstance(_rendered(example, _template(source, "jinja2"), {}), tuple) is False
    with pytest.raises(SftprepError, match="otherwise than Jinja2; rebuild with --renderer jinja2"):
        render_example(example, "assistant", _template(source), {})


def test_rows_after_the_first_are_sampled(monkeypatch):
    template = _template(BASE)
    calls = []
    real = fast_render.sample_due
    monkeypatch.setattr(
        "sftprep.stages.render.sample_due", lambda t: calls.append(real(t)) or calls[-1]
    )
    for _ in range(2 * fast_render.SAMPLE_EVERY):
        render_example(_chat("a", "b", "c", "d"), "assistant", template, {})
    sampled = [i + 1 for i, due in enumerate(calls) if due]
    assert sampled == [1, fast_render.SAMPLE_EVERY, 2 * fast_render.SAMPLE_EVERY]


def test_short_rows_and_renderer_jinja2_never_use_minijinja():
    template = _template(BASE)
    render_example(_chat("a", "b"), "assistant", template, {})
    assert template.twin_rows == 0 and template.twins == {}
    template = _template(BASE, "jinja2")
    render_example(_chat("a", "b", "c", "d"), "assistant", template, {})
    assert template.twin_rows == 0 and template.twins == {}


def test_a_refusal_is_jinja2s_own():
    # both refuse the 3-message prefix the last turn is located with; the row's error is Jinja2's
    source = (
        "{% if messages|length == 3 %}{{ raise_exception('three is refused') }}{% endif %}" + BASE
    )
    template = _template(source)
    result = _rendered(_chat("a", "b", "c", "d"), template, {})
    assert result == _rendered(_chat("a", "b", "c", "d"), _template(source, "jinja2"), {})
    assert result[0] == "template_error" and "three is refused" in result[1]
    assert template.twin_rows == 1


def test_fuel_stands_for_the_time_budget():
    env, _ = fast_render._compiled(
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", 1e-4
    )
    twin = fast_render._twin(env, {}, 1 << 20)
    assert twin([], None, False) is None  # out of fuel: Jinja2 renders it, under its own budget
    env, _ = fast_render._compiled("{% for i in range(10) %}{{ i }}{% endfor %}", 1e-4)
    assert fast_render._twin(env, {}, 1 << 20)([], None, False) == "0123456789"


def test_without_minijinja(monkeypatch):
    monkeypatch.setitem(sys.modules, "minijinja", None)  # import fails
    monkeypatch.setattr(fast_render, "_ENVIRONMENTS", {})
    template = _template(BASE)
    example = _chat("a", "b", "c", "d")
    assert _rendered(example, template, {}) == _rendered(example, _template(BASE, "jinja2"), {})
    assert template.twin_rows == 0
    with pytest.raises(SftprepError, match="minijinja is not installed"):
        fast_render.require_renderer("minijinja", BASE, 1.0)
    fast_render.require_renderer("auto", BASE, 1.0)
    with pytest.raises(SftprepError, match="does not compile"):
        monkeypatch.setattr(fast_render, "_ENVIRONMENTS", {})
        monkeypatch.delitem(sys.modules, "minijinja")
        fast_render.require_renderer("minijinja", "{% generation %}x{% endgeneration %}", 1.0)


def test_the_fingerprint_names_the_version():
    assert fast_render.fingerprint_part("jinja2") == ["jinja2", None]
    assert fast_render.fingerprint_part("auto") == ["auto", installed("minijinja")]
    assert installed("minijinja")


def test_compile_template_keeps_the_renderer():
    assert compile_template(BASE, 1.0, 64, "jinja2").renderer == "jinja2"
    assert compile_template(BASE).renderer == "auto"
