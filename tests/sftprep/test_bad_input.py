"""Bad input stops the build with file, row, what and how to fix, and leaves nothing behind;
--on-error skip drops such rows and counts each by its reason."""

import json
import shutil

import pytest
from typer.testing import CliRunner

import sftprep
from sftprep.cli import app
from sftprep.errors import SftprepError
from tests.conftest import BUNDLED_TOKENIZER
from tests.sftprep.build_checks import check_build
from tests.sftprep.worker_pool import force_worker_pool

GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}

BAD_LINES = {
    "malformed_json": '{"messages": [',
    "bad_row_type": "[1, 2]",
    "unknown_role": json.dumps({"messages": [{"role": "wizard", "content": "x"}]}),
    "missing_content": json.dumps({"messages": [{"role": "user"}]}),
    "empty_conversation": json.dumps({"messages": []}),
    "missing_field": json.dumps({"other": 1}),
    "bad_tool_calls": json.dumps(
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": "f()"},
            ]
        }
    ),
    "no_assistant_turn": json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
    "no_loss_tokens": json.dumps(
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "train": False},
            ]
        }
    ),
}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run(tmp_path, source, **config):
    return sftprep.build(
        {
            "sources": [str(source)],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(tmp_path / "out"),
            "num_proc": 1,
            **config,
        }
    )


@pytest.mark.parametrize("reason", [r for r in BAD_LINES if r != "no_loss_tokens"])
def test_a_bad_row_stops_the_build_naming_file_row_and_reason(tmp_path, reason):
    src = write_lines(
        tmp_path / "d.jsonl", [json.dumps(GOOD)] * 3 + [BAD_LINES[reason]] + [json.dumps(GOOD)]
    )
    with pytest.raises(SftprepError) as err:
        run(tmp_path, src)
    message = str(err.value)
    assert str(src) in message and "row 3" in message and reason in message
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]


@pytest.mark.parametrize("num_proc", [1, 2])
def test_skip_drops_and_counts_every_bad_row_by_reason(tmp_path, monkeypatch, num_proc):
    lines = [json.dumps(GOOD)]
    for line in BAD_LINES.values():
        lines += [line, json.dumps(GOOD)]
    src = write_lines(tmp_path / "d.jsonl", lines)
    if num_proc > 1:
        force_worker_pool(monkeypatch)
    manifest = run(tmp_path, src, on_error="skip", num_proc=num_proc)
    check_build(tmp_path / "out")
    assert manifest["dropped"] == {reason: 1 for reason in BAD_LINES}
    assert (
        manifest["sources"][0]["rows_read"] == len(lines)
        and manifest["sources"][0]["rows_kept"] == len(BAD_LINES) + 1
    )


def test_a_template_error_is_a_row_error(tmp_path):
    template = tmp_path / "strict.jinja"
    template.write_text(
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system turns') }}{% endif %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    src = write_lines(
        tmp_path / "d.jsonl",
        [
            json.dumps(GOOD),
            json.dumps({"messages": [{"role": "system", "content": "s"}] + GOOD["messages"]}),
        ],
    )
    with pytest.raises(SftprepError, match=r"row 1: .*no system turns.*template_error"):
        run(tmp_path, src, chat_template=str(template))
    assert run(tmp_path, src, chat_template=str(template), on_error="skip")["dropped"] == {
        "template_error": 1
    }


def test_the_template_budgets_are_config_keys(tmp_path):
    """template_seconds and template_max_mb reach every render: a loop whose length a row decides
    times out under a small budget (that row only) and completes under a big one."""
    template = tmp_path / "loop.jinja"
    template.write_text(
        "{% for m in messages %}{% if m.role == 'user' %}"
        "{% for a in range(m.content | int) %}{% for b in range(1000) %}{% endfor %}{% endfor %}"
        "{% endif %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    chats = [
        [{"role": "user", "content": n}, {"role": "assistant", "content": "a"}]
        for n in ("1", "30000")
    ]
    src = write_lines(tmp_path / "d.jsonl", [json.dumps({"messages": m}) for m in chats])
    with pytest.raises(SftprepError, match=r"row 1: .*took over 0.05 s.*template_error"):
        run(tmp_path, src, chat_template=str(template), template_seconds=0.05)
    assert run(tmp_path, src, chat_template=str(template), template_seconds=30)["dropped"] == {}
    big = tmp_path / "big.jsonl"
    write_lines(big, [json.dumps(GOOD)])
    padded = tmp_path / "pad.jinja"
    padded.write_text(
        template.read_text().replace("{% for m", '{% set pad = "y" * 2000000 %}{% for m', 1)
    )
    with pytest.raises(SftprepError, match=r"repetition is over 1,048,576 items"):
        run(tmp_path, big, chat_template=str(padded), template_max_mb=1, overwrite=True)
    manifest = run(tmp_path, big, chat_template=str(padded), template_max_mb=2, overwrite=True)
    assert manifest["dropped"] == {} and manifest["config"]["template_max_mb"] == 2


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("empty.jsonl", b"", "empty"),
        ("broken.json", b'[{"text": "a"},', "malformed JSON"),
        ("latin1.json", '[{"text": "caf\u00e9"}]'.encode("latin-1"), "UTF-8"),
        ("dup.csv", b"text,text\na,b\n", "duplicate column"),
    ],
)
def test_unreadable_files_are_clear_errors(tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SftprepError, match=needle) as err:
        run(tmp_path, tmp_path / name)
    assert name in str(err.value) and not (tmp_path / "out").exists()


def test_cli_prints_one_line_and_exits_1(tmp_path):
    src = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD), "{oops"])
    result = CliRunner().invoke(
        app,
        [
            "build",
            str(src),
            "--tokenizer",
            str(BUNDLED_TOKENIZER),
            "--out",
            str(tmp_path / "out"),
            "-q",
        ],
    )
    assert result.exit_code == 1
    assert (
        result.output.strip().count("\n") == 0
        and result.output.startswith("error: ")
        and "row 1" in result.output
    )
    assert "Traceback" not in result.output


def test_a_failed_build_leaves_the_previous_build_intact(tmp_path):
    good = write_lines(tmp_path / "good.jsonl", [json.dumps(GOOD)] * 4)
    first = run(tmp_path, good)
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), "{oops"])
    with pytest.raises(SftprepError):
        run(tmp_path, bad, overwrite=True)
    check_build(tmp_path / "out")
    assert (
        json.loads((tmp_path / "out" / "manifest.json").read_text())["fingerprint"]
        == first["fingerprint"]
    )


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_lone_surrogate_is_a_counted_row_error_never_altered(tmp_path, suffix):
    """`"\\ud83d"` is valid JSON but no text: it must not reach the tokenizer (which would fail the
    whole batch naming no row), nor be replaced silently (ijson's C backend turns it into '?')."""
    bad = '{"messages": [{"role": "user", "content": "smile \\ud83d"}, {"role": "assistant", "content": "ok"}]}'
    lines = [json.dumps(GOOD), bad, json.dumps(GOOD)]
    src = tmp_path / f"d{suffix}"
    src.write_text("[" + ",".join(lines) + "]" if suffix == ".json" else "\n".join(lines) + "\n")
    with pytest.raises(
        SftprepError,
        match=r"row 1: the text holds a lone UTF-16 surrogate '\\ud83d'.*\[invalid_unicode\]",
    ):
        run(tmp_path, src)
    manifest = run(tmp_path, src, on_error="skip")
    assert (
        manifest["dropped"] == {"invalid_unicode": 1} and manifest["sources"][0]["rows_kept"] == 2
    )


BOM = "\ufeff"


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_byte_order_mark_is_not_data(tmp_path, suffix):
    """Files saved by Windows tools start with a UTF-8 BOM: the first row must not become malformed
    (JSONL), nor the first column name `\\ufeffprompt` (CSV)."""
    rows = [{"prompt": "Q1?", "completion": " A1."}, {"prompt": "Q2?", "completion": " A2."}]
    src = tmp_path / f"d{suffix}"
    if suffix == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in rows)
    elif suffix == ".json":
        text = json.dumps(rows)
    else:
        text = "prompt,completion\n" + "".join(f"{r['prompt']},{r['completion']}\n" for r in rows)
    src.write_text(BOM + text, encoding="utf-8")
    manifest = run(tmp_path, src)
    assert manifest["sources"][0]["rows_kept"] == 2 and manifest["dropped"] == {}
    assert manifest["sources"][0]["format"] == "prompt-completion"


def test_a_csv_field_over_the_limit_is_a_counted_row_error(tmp_path, monkeypatch):
    import csv

    from sftprep.stages import sources

    monkeypatch.setattr(sources, "CSV_FIELD_LIMIT", 1 << 20)
    previous = csv.field_size_limit(1 << 20)
    try:
        src = tmp_path / "d.csv"
        src.write_text("prompt,completion\nQ?, A.\n" + "Q?," + "x" * (2 << 20) + "\nQ2?, B.\n")
        manifest = run(tmp_path, src, on_error="skip")
    finally:
        csv.field_size_limit(previous)
    assert manifest["dropped"] == {"malformed_csv": 1} and manifest["sources"][0]["rows_kept"] == 2


def test_json_text_columns_that_nest_too_deep_or_hold_huge_numbers_are_row_errors(tmp_path):
    deep = json.dumps({"messages": "[" * 10000 + "]" * 10000})
    huge = json.dumps({"messages": '[{"role": "user", "content": "q", "n": ' + "9" * 5000 + "}]"})
    src = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD), deep, huge, json.dumps(GOOD)])
    manifest = run(tmp_path, src, on_error="skip")
    assert manifest["dropped"] == {"too_deep": 1, "number_too_large": 1}


def test_a_source_reached_twice_is_refused(tmp_path):
    src = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD)])
    (tmp_path / "link.jsonl").symlink_to(src)
    for sources in (
        [str(src), str(src)],
        [str(src), str(tmp_path / "link.jsonl")],
        [str(src), str(tmp_path / "*.jsonl")],
    ):
        with pytest.raises(SftprepError, match="given more than once; list each source once"):
            sftprep.build(
                {
                    "sources": sources,
                    "tokenizer": str(BUNDLED_TOKENIZER),
                    "out": str(tmp_path / "out"),
                }
            )
    assert not (tmp_path / "out").exists()


def test_an_eval_source_that_is_a_training_source_is_refused(tmp_path):
    src = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD)])
    with pytest.raises(SftprepError, match="also a training source"):
        run(tmp_path, src, eval_sources=[str(src)])


def test_a_build_whose_every_row_is_dropped_fails_and_writes_nothing(tmp_path):
    src = write_lines(
        tmp_path / "d.jsonl", [BAD_LINES["unknown_role"], BAD_LINES["no_assistant_turn"]]
    )
    with pytest.raises(
        SftprepError,
        match=r"the train split would be empty: all 2 rows were dropped \(1 no_assistant_turn, 1 unknown_role\)",
    ):
        run(tmp_path, src, on_error="skip")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]


TOOL_ROW = {
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": "18C"},
        {"role": "assistant", "content": "It is 18C."},
    ]
}
TOOL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }} {{ c.function.arguments | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_tool_calls_a_template_drops_are_a_row_error_not_an_empty_trained_turn(tmp_path):
    """SmolLM2's template (the bundled one) does not render tool_calls: the call would vanish and
    an empty assistant turn be trained. With a template that renders them, the row builds."""
    src = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD), json.dumps(TOOL_ROW)])
    with pytest.raises(
        SftprepError,
        match=r"row 1: message 1 calls tool 'get_weather', but the chat template does not render it.*\[tools_unsupported\]",
    ):
        run(tmp_path, src)
    assert run(tmp_path, src, on_error="skip")["dropped"] == {"tools_unsupported": 1}
    template = tmp_path / "tools.jinja"
    template.write_text(TOOL_TEMPLATE)
    shutil.rmtree(tmp_path / "out")
    manifest = run(tmp_path, src, chat_template=str(template))
    assert manifest["dropped"] == {} and manifest["sources"][0]["rows_kept"] == 2


def test_a_file_with_no_readable_row_says_why_not_no_columns(tmp_path):
    numbers = tmp_path / "n.json"
    numbers.write_text("[1, 2, 3]")
    with pytest.raises(
        SftprepError,
        match=r"no row can be read \(3 tried\); row 0: expected a JSON object, got int",
    ):
        run(tmp_path, numbers)
    latin = tmp_path / "l.jsonl"
    latin.write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(
        SftprepError, match=r"row 0: line 1 is not valid UTF-8 \(byte 13 of the line"
    ):
        run(tmp_path, latin)


def test_a_prompt_that_is_not_text_or_messages_is_named(tmp_path):
    src = write_lines(
        tmp_path / "d.jsonl",
        [
            json.dumps({"prompt": "a", "completion": "b"}),
            json.dumps({"prompt": 1, "completion": 2}),
        ],
    )
    with pytest.raises(
        SftprepError, match=r"row 1: `prompt` must be a string or a list of messages, got int"
    ):
        run(tmp_path, src)


def test_an_example_over_max_text_mb_is_a_counted_row_error_not_a_memory_blow_up(tmp_path):
    """Tokenizing takes ~150 bytes per character: a 200 MB one-line document needed 18 GB (and
    used to end in a Rust allocation abort). Past --max-text-mb it costs one row instead."""
    long_text = "word " * 300_000  # 1.5 MB of characters
    src = write_lines(
        tmp_path / "d.jsonl", [json.dumps({"text": long_text}), json.dumps({"text": "ok"})]
    )
    with pytest.raises(
        SftprepError,
        match=r"row 0: the example is 1,500,000 characters, over the 1,048,576 .*\[text_too_long\]",
    ):
        run(tmp_path, src, max_text_mb=1)
    manifest = run(tmp_path, src, max_text_mb=1, on_error="skip")
    assert manifest["dropped"] == {"text_too_long": 1} and manifest["sources"][0]["rows_kept"] == 1
    manifest = run(tmp_path, src, max_text_mb=2, overwrite=True)
    assert manifest["dropped"] == {} and manifest["sources"][0]["truncated"] == 1
