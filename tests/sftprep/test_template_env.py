"""Our sandboxed template environment renders exactly what transformers' renders.

sftprep's environment takes shortcuts for speed (dict attribute look-ups, cached attribute
verdicts, inline `{% generation %}` blocks); transformers' own compiled template is the reference.
"""

import jinja2
import pytest

from sftprep.chat_template import compile_template

transformers_templates = pytest.importorskip("transformers.utils.chat_template_utils")

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
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
    "generation, namespace set": "{% set ns = namespace(a=0) %}{% for m in messages %}{% generation %}{% set ns.a = ns.a + 1 %}{% endgeneration %}{{ ns.a }}{% endfor %}",
}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_renders_like_transformers(name):
    source = SOURCES[name]
    ours = compile_template(source).render(messages=MESSAGES)
    reference = transformers_templates._compile_jinja_template(source).render(messages=MESSAGES)
    assert ours == reference


@pytest.mark.parametrize("expression", ["m.pop('role')", "m.update({'a': 1})", "m.clear()", "messages.append(1)", "m.__class__.__mro__"])
def test_unsafe_operations_are_refused_like_transformers(expression):
    source = "{% for m in messages %}{{ " + expression + " }}{% endfor %}"
    for template in (compile_template(source), transformers_templates._compile_jinja_template(source)):
        with pytest.raises(jinja2.exceptions.SecurityError):
            template.render(messages=[dict(m) for m in MESSAGES])
