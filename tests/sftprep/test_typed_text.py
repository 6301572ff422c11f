"""What a user types or ships is what is trained: command-line escapes decoded, template fields
plain columns only, no byte-order mark in the data, and tokenizer folders that would silently
change the examples refused in one line naming the file."""

import json
import shutil

import pytest

import sftprep
from sftprep.errors import SftprepError
from sftprep.stages.tokenizer import load_tokenizer
from tests.conftest import BUNDLED_TOKENIZER
from tests.sftprep.build_checks import examples_by_id
from tests.sftprep.cli_build import invoke_build

ROW = {"question": "Hi?", "answer": "Hello."}


def _cli(tmp_path, *args):
    source = tmp_path / "qa.jsonl"
    source.write_text(json.dumps(ROW) + "\n")
    out = tmp_path / "out"
    return invoke_build(source, out, *args), out


def test_escapes_typed_in_a_prompt_template_flag_are_decoded(tmp_path):
    result, out = _cli(
        tmp_path,
        "--prompt-template",
        r"### Q: {question}\n### A:",
        "--completion-template",
        r" {answer}\t",
    )
    assert result.exit_code == 0, result.output
    tokenizer = load_tokenizer(str(BUNDLED_TOKENIZER))
    [(ids, _)] = examples_by_id(out).values()
    text = tokenizer.backend.decode(ids)
    assert "### Q: Hi?\n### A: Hello.\t" in text and "\\n" not in text and "\\t" not in text


def test_a_python_api_string_is_taken_as_is(tmp_path):
    source = tmp_path / "qa.jsonl"
    source.write_text(json.dumps(ROW) + "\n")
    out = tmp_path / "out"
    sftprep.build(
        {
            "sources": [str(source)],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(out),
            "prompt_template": r"Q: {question}\n",
            "completion_template": "{answer}",
        }
    )
    [(ids, _)] = examples_by_id(out).values()
    assert "Q: Hi?\\n" in load_tokenizer(str(BUNDLED_TOKENIZER)).backend.decode(ids)


@pytest.mark.parametrize(
    "template, needle",
    [
        ("Q: {question.upper}", "{question.upper} is not a plain column name"),
        ("Q: {question[0]}", "{question[0]} is not a plain column name"),
        ("Q: {question!r}", "{question!r} is not a plain column name"),
        ("Q: {question:>20}", "{question:>20} is not a plain column name"),
        ("Q: {0}", "{0} is not a plain column name"),
        ("Q: {}", "{} is not a plain column name"),
        ("Q: {question", "expected '}'"),
    ],
)
def test_a_template_field_that_is_not_a_plain_column_is_a_config_error(tmp_path, template, needle):
    result, out = _cli(
        tmp_path, "--prompt-template", template, "--completion-template", " {answer}"
    )
    assert result.exit_code == 2 and needle in result.output, result.output
    assert "Traceback" not in result.output and "--prompt-template" in result.output
    assert not out.exists()


def _tokenizer_copy(tmp_path):
    folder = tmp_path / "tok"
    shutil.copytree(BUNDLED_TOKENIZER, folder)
    return folder


def test_a_byte_order_mark_in_a_template_file_is_not_data(tmp_path):
    template = tmp_path / "chat.jinja"
    text = (BUNDLED_TOKENIZER / "chat_template.jinja").read_text()
    template.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_tokenizer(str(BUNDLED_TOKENIZER), str(template)).chat_template == text
    folder = _tokenizer_copy(tmp_path)
    (folder / "chat_template.jinja").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_tokenizer(str(folder)).chat_template == text


def _config_edit(folder, **changes):
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "damage, needle",
    [
        (
            lambda f: _config_edit(f, eos_token="<|not_a_token|>"),
            "`eos_token` is '<|not_a_token|>', which is not a token",
        ),
        (lambda f: _config_edit(f, eos_token=2), "`eos_token` is 2; it must be the token's text"),
        (
            lambda f: (f / "tokenizer.json").write_text('{"version": "1.0", "mod'),
            "tokenizer.json: not a tokenizer file",
        ),
        (lambda f: (f / "tokenizer.json").write_text(""), "tokenizer.json: not a tokenizer file"),
        (
            lambda f: (f / "tokenizer_config.json").write_text("{oops"),
            "tokenizer_config.json: not valid JSON",
        ),
        (
            lambda f: (f / "tokenizer_config.json").write_text("[1, 2]"),
            "holds a list, not a JSON object",
        ),
        (lambda f: (f / "chat_template.jinja").write_bytes(b"{{ '\xff' }}"), "is not UTF-8"),
        (
            lambda f: (
                (f / "chat_template.jinja").unlink(),
                _config_edit(f, chat_template=[{"template": "x"}]),
            ),
            "has no `name`",
        ),
        (
            lambda f: (
                (f / "chat_template.jinja").unlink(),
                _config_edit(f, chat_template={"x": 1}),
            ),
            "is a dict, not a template string",
        ),
    ],
)
def test_a_broken_tokenizer_folder_is_one_line_naming_the_file(tmp_path, damage, needle):
    folder = _tokenizer_copy(tmp_path)
    damage(folder)
    with pytest.raises(SftprepError) as err:
        load_tokenizer(str(folder))
    assert needle in str(err.value) and str(folder) in str(err.value) and "\n" not in str(err.value)
