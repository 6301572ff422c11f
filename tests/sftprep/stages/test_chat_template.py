"""Our sandboxed template environment renders exactly what transformers' renders.

sftprep's environment takes shortcuts for speed (dict attribute look-ups, cached attribute
verdicts, inline `{% generation %}` blocks); transformers' own compiled template is the reference.
"""

import jinja2
import pytest

from sftprep.errors import SftprepError
from sftprep.stages.chat_template import compile_template

transformers_templates = pytest.importorskip("transformers.utils.chat_template_utils")

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {
        "role": "assistant",
        "content": "Hello",
        "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}],
    },
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Bye!"},
]

SOURCES = {
    "attribute and item access": "{% for m in messages %}{{ m.role }}|{{ m['content'] }}|{{ m.missing is defined }};{% endfor %}",
    "dict methods": "{% for m in messages %}{{ m.keys() | list | length }}{{ m.get('role') }}{% for k, v in m.items() %}{{ k }}{% endfor %};{% endfor %}",
    "a key named like a dict method": "{% for m in messages %}{{ m.items is defined }}{{ m.tool_calls[0].function.name if m.tool_calls }};{% endfor %}",
    "loop and namespace": "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.first %}F{% endif %}{{ loop.index0 }}{% set ns.n = ns.n + 1 %}{% if loop.last %}L{{ ns.n }}{% endif %}{% endfor %}",
    "string methods": "{% for m in messages %}{{ m.content.strip().upper() }}{{ m.content.split('e') | length }}{{ '{}'.format(m.role) }};{% endfor %}",
    "tojson": "{{ messages[2].tool_calls | tojson }}{{ messages | length }}",
    "generation, plain": "{% for m in messages %}{% generation %}[{{ m.content }}{{ loop.index }}]{% endgeneration %}{% endfor %}",
    "generation, set inside stays inside": "{% for m in messages %}{% generation %}{% set x = m.role %}[{{ x }}]{% endgeneration %}{{ x }}{% endfor %}",
    "generation, nested set": "{% set y = 'o' %}{% for m in messages %}{% generation %}{% if m.role == 'user' %}{% set y = m.content %}{% endif %}{{ y }}{% endgeneration %}{{ y }}{% endfor %}{{ y }}",
    "generation, set inside a loop": "{% for m in messages %}{% generation %}{% for c in m.tool_calls or [] %}{% set c = c.function %}{{ c.name }}{% endfor %}{{ c }}{% endgeneration %}{% endfor %}",
    "generation, tuple set": "{% set a = 0 %}{% for m in messages %}{% generation %}{% set a, b = m.role, 1 %}{{ a }}{% endgeneration %}{{ a }}{% endfor %}",
    "generation, macro defined inside": "{% macro m() %}outer{% endmacro %}{% for x in messages %}{% generation %}{% macro m() %}inner{% endmacro %}{{ m() }}{% endgeneration %}{{ m() }}{% endfor %}",
    "generation, inside a macro using varargs": "{% macro m() %}{% generation %}{{ varargs | length }}{{ kwargs | length }}{% endgeneration %}{{ varargs | length }}{% endmacro %}{{ m(1, 2, a=3) }}",
    "generation, inside a call block using caller": "{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}{% generation %}{{ caller is defined }}{% endgeneration %}{% endcall %}",
    "generation, call block inside": "{% macro w() %}<{{ caller() }}>{% endmacro %}{% for m in messages %}{% generation %}{% call w() %}{% set z = m.role %}{{ z }}{% endcall %}{{ z is defined }}{% endgeneration %}{% endfor %}",
    "generation, loop control inside an inner loop": "{% for m in messages %}{% generation %}{% for c in m.content %}{% if loop.index > 2 %}{% break %}{% endif %}{{ c }}{% endfor %}{% endgeneration %}{% endfor %}",
    "generation, set in a for-else": "{% set e = 'o' %}{% for m in messages %}{% generation %}{% for c in [] %}{% else %}{% set e = m.role %}{% endfor %}{{ e }}{% endgeneration %}{{ e }}{% endfor %}",
    "generation, namespace set": "{% set ns = namespace(a=0) %}{% for m in messages %}{% generation %}{% set ns.a = ns.a + 1 %}{% endgeneration %}{{ ns.a }}{% endfor %}",
}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_renders_like_transformers(name):
    source = SOURCES[name]
    ours = compile_template(source).render(messages=MESSAGES)
    reference = transformers_templates._compile_jinja_template(source).render(messages=MESSAGES)
    assert ours == reference


@pytest.mark.parametrize("control", ["break", "continue"])
def test_loop_control_out_of_a_generation_block_fails_to_compile_like_transformers(control):
    source = (
        "{% for m in messages %}{% generation %}{% "
        + control
        + " %}{% endgeneration %}{% endfor %}"
    )
    with pytest.raises(SyntaxError):
        transformers_templates._compile_jinja_template(source)
    with pytest.raises(SftprepError, match="does not compile"):
        compile_template(source)


@pytest.mark.parametrize(
    "expression",
    [
        "m.pop('role')",
        "m.update({'a': 1})",
        "m.clear()",
        "messages.append(1)",
        "m.__class__.__mro__",
    ],
)
def test_unsafe_operations_are_refused_like_transformers(expression):
    source = "{% for m in messages %}{{ " + expression + " }}{% endfor %}"
    for template in (
        compile_template(source),
        transformers_templates._compile_jinja_template(source),
    ):
        with pytest.raises(jinja2.exceptions.SecurityError):
            template.render(messages=[dict(m) for m in MESSAGES])
