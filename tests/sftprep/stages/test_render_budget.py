"""A hostile or broken chat template costs one row (template_error), never a hang, a huge
allocation or a traceback."""

import time

import pytest

from sftprep.errors import RowError
from sftprep.stages.chat_template import compile_template, render

MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]


@pytest.mark.parametrize(
    "body,says",
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{% for i in range(10**9) %}{% endfor %}", "OverflowError"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursed too deep"),
        ('{{ "x" * 300000000 }}', "repetition is over"),
        ("{{ 10 ** 100000 }}", "is too large"),
        (
            "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
            r"the render took over 1 s \(config template_seconds",
        ),
        ('{% for i in range(70000) %}{{ "y" * 1000 }}{% endfor %}', "over the 67,108,864 limit"),
    ],
)
def test_a_template_that_fails_costs_one_row(body, says):
    template = compile_template(body + "{% for m in messages %}{{ m.content }}{% endfor %}")
    started = time.monotonic()
    with pytest.raises(RowError, match=says) as err:
        render(template, MESSAGES, None, {})
    assert err.value.reason == "template_error" and time.monotonic() - started < 10


def test_a_normal_template_still_renders_after_a_timeout():
    slow = compile_template(
        "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}"
    )
    with pytest.raises(RowError):
        render(slow, MESSAGES, None, {})
    fine = compile_template(
        "{% for m in messages %}{{ m.role }}:{{ m.content }} {% endfor %}{{ 'ab' * 2 }}"
    )
    assert render(fine, MESSAGES, None, {}) == "user:hi assistant:yo abab"
