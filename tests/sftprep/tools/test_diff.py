"""`sftprep diff`: identical builds say so; a planted one-token change and a changed option are
reported with the config key and the first differing token of the changed example."""

import json

import pytest
from tokenizers import Tokenizer
from typer.testing import CliRunner

import sftprep
from sftprep.cli import app
from sftprep.tools.diff import CONTEXT
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES
from tests.sftprep.build_checks import examples_by_id, load_manifest

CHANGED_ROW = 4  # chat.jsonl row 4: "0, 1, 2, 3." becomes "0, 1, 2, 4."


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """a, a copy of a in another folder, b with one token changed in one row, c with --loss-on all."""
    root = tmp_path_factory.mktemp("diff")
    rows = (EXAMPLES / "data" / "chat.jsonl").read_text().splitlines()
    original, changed = root / "orig", root / "changed"
    original.mkdir(), changed.mkdir()
    (original / "chat.jsonl").write_text("\n".join(rows) + "\n")
    edited = json.loads(rows[CHANGED_ROW])
    assert edited["messages"][-1]["content"] == "0, 1, 2, 3."
    edited["messages"][-1]["content"] = "0, 1, 2, 4."
    (changed / "chat.jsonl").write_text(
        "\n".join(rows[:CHANGED_ROW] + [json.dumps(edited)] + rows[CHANGED_ROW + 1 :]) + "\n"
    )
    alpaca = str(EXAMPLES / "data" / "alpaca.json")

    def make(name: str, folder, **options) -> str:
        out = root / name
        sftprep.build(
            {
                "sources": [str(folder / "chat.jsonl"), alpaca],
                "tokenizer": str(BUNDLED_TOKENIZER),
                "out": str(out),
                "max_length": 128,
                "num_proc": 1,
                **options,
            }
        )
        return str(out)

    return {
        "a": make("a", original),
        "a_again": make("a_again", original),
        "b": make("b", changed),
        "c": make("c", original, loss_on="all"),
    }


def diff(a: str, b: str, *args: str):
    result = CliRunner().invoke(app, ["diff", a, b, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_identical_builds(builds):
    out = diff(builds["a"], builds["a_again"])
    assert out.startswith("identical") and load_manifest(builds["a"])["fingerprint"][:12] in out
    assert diff(builds["a"], builds["a"]).startswith("identical")


def test_one_changed_token_is_found(builds):
    a, b = examples_by_id(builds["a"]), examples_by_id(builds["b"])
    differing = [e for e in a if a[e][0] != b[e][0]]
    assert differing == [CHANGED_ROW], "exactly the edited example differs"
    ids_a, ids_b = a[CHANGED_ROW][0], b[CHANGED_ROW][0]
    position = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y)
    tok = Tokenizer.from_file(str(BUNDLED_TOKENIZER / "tokenizer.json"))
    out = diff(builds["a"], builds["b"])
    assert out.startswith("differ:")
    assert "chat.jsonl (train) content_sha256: a: " in out and "chat.jsonl (train) path: a: " in out
    assert "1 differ in tokens, 0 only in the loss mask" in out
    head = f"example {CHANGED_ROW} — "
    line = next(text for text in out.splitlines() if head in text)
    assert (
        f"row {CHANGED_ROW}: {len(ids_a)} → {len(ids_b)} tokens; first different token at position {position}"
        in line
    )
    assert f"{tok.decode([ids_a[position]])!r} (id {ids_a[position]})" in out
    assert f"{tok.decode([ids_b[position]])!r} (id {ids_b[position]})" in out
    assert f"{tok.decode(ids_a[position - CONTEXT : position])!r} ▶" in out, (
        "context before the token"
    )
    assert (
        f"◀ {tok.decode(ids_b[position + 1 : position + 1 + CONTEXT], skip_special_tokens=False)!r}"
        in out
    ), "context after it"


def test_changed_option_names_the_key_and_the_mask(builds):
    out = diff(builds["a"], builds["c"])
    assert "config:\n  loss_on: a: 'assistant' → b: 'all'" in out
    assert "0 differ in tokens" in out and "only in the loss mask" in out
    assert "loss mask first differs at position 1 (b trains it, a does not" in out
    assert "train loss_tokens: a: " in out
    shown = [text for text in out.splitlines() if text.startswith("  example ")]
    assert (
        len(shown) == 3
        and len(
            [
                text
                for text in diff(builds["a"], builds["c"], "--examples", "1").splitlines()
                if text.startswith("  example ")
            ]
        )
        == 1
    )


def test_not_a_build(builds, tmp_path):
    result = CliRunner().invoke(app, ["diff", builds["a"], str(tmp_path)])
    assert (
        result.exit_code == 1
        and result.output.startswith("error: ")
        and "manifest.json" in result.output
    )


def test_help_documents_the_exit_code():
    result = CliRunner().invoke(app, ["diff", "--help"])
    text = " ".join(result.output.split())
    assert (
        result.exit_code == 0
        and "identical" in text
        and "Exit code 0 whenever the comparison ran" in text
    )
