"""Templates are untrusted code: they render in a sandbox and cannot read files or reach Python internals."""

import json

import pytest

import sftprep
from sftprep.errors import SftprepError
from tests.conftest import BUNDLED_TOKENIZER

ATTACKS = {
    "open": "{{ open('/etc/passwd').read() }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ raise_exception.__globals__['__builtins__']['open']('/etc/passwd').read() }}",
    "cycler": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "namespace": "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_malicious_template_cannot_read_a_file(tmp_path, name):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    template = tmp_path / "evil.jinja"
    template.write_text(
        ATTACKS[name].replace("/etc/passwd", str(secret))
        + "{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        )
        + "\n"
    )
    out = tmp_path / "out"
    try:
        sftprep.build(
            {
                "sources": [str(data)],
                "tokenizer": str(BUNDLED_TOKENIZER),
                "out": str(out),
                "chat_template": str(template),
                "num_proc": 1,
            }
        )
    except SftprepError as err:
        assert "TOP-SECRET" not in str(err)
        return
    assert "TOP-SECRET" not in b"".join(
        p.read_bytes() for p in out.rglob("*") if p.is_file()
    ).decode("latin-1")


def test_shards_and_manifest_hold_no_pickles(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    sftprep.build(
        {
            "sources": [str(data)],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(tmp_path / "out"),
            "num_proc": 1,
        }
    )
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert (
                b"\x80\x04\x95" not in path.read_bytes()
                and b"\x80\x05\x95" not in path.read_bytes()
            )
