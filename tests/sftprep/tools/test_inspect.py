"""`sftprep inspect`: the plain-text and HTML views mark exactly the trained tokens, name each
example's source row, and escape what the data holds. Expected text comes from the shards (read by
tests/sftprep/stages_checks.py) decoded with the tokenizer directly, not from sftprep's decoder."""

import io
import json
import re
import shutil
from html.parser import HTMLParser

import pytest
from rich.console import Console
from tokenizers import Tokenizer
from typer.testing import CliRunner

import sftprep
from schemas import EXAMPLE_IDS, INPUT_IDS, LOSS_MASK, SEQ_LENS
from sftprep.cli import app
from sftprep.tools.inspect_text import print_rich, select
from sftprep.tools.view import BuildView
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES
from tests.sftprep.build_checks import load_manifest, read_rows

HOSTILE = [
    {
        "messages": [
            {"role": "user", "content": "<script>alert('x')</script> & \"quotes\" café"},
            {"role": "assistant", "content": "<b>bold</b> &amp; 你好 😀\n\tdone"},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Two lines\nhere"},
            {"role": "assistant", "content": "ok\n\nthen <|im_end|> as text"},
        ]
    },
]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    hostile = root / "hostile.jsonl"
    hostile.write_text("".join(json.dumps(row) + "\n" for row in HOSTILE))
    out = root / "build"
    sftprep.build(
        {
            "sources": [
                str(EXAMPLES / "data" / "chat.jsonl"),
                str(EXAMPLES / "data" / "alpaca.json"),
                str(hostile),
            ],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(out),
            "max_length": 128,
            "eval_fraction": 0.2,
            "num_proc": 1,
        }
    )
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_file(str(BUNDLED_TOKENIZER / "tokenizer.json"))


def segments(row: dict):
    """(example_id, ids, mask) of each segment of a shard row."""
    start = 0
    for length, example_id in zip(row[SEQ_LENS], row[EXAMPLE_IDS]):
        yield (
            example_id,
            row[INPUT_IDS][start : start + length],
            row[LOSS_MASK][start : start + length],
        )
        start += length


def trained_runs(tokenizer, ids, mask) -> list[str]:
    """Each maximal run of loss_mask == 1 tokens, decoded on its own."""
    runs, current = [], []
    for token, m in zip(ids + [None], mask + [0]):
        if m:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current, skip_special_tokens=False))
            current = []
    return runs


def source_row(manifest: dict, example_id: int) -> tuple[str, int]:
    for s in manifest["sources"]:
        if s["example_id_start"] <= example_id < s["example_id_start"] + s["rows_read"]:
            return s["path"], example_id - s["example_id_start"]
    raise AssertionError(example_id)


def plain_segments(output: str) -> list[tuple[str, str]]:
    """(header, body) of each segment in plain output; the body with ↵ undone. A body ends with
    "\n", then a blank line when another row's title follows."""
    parts = re.split(r"^(── example .* ──|\w+ row \d+ of \d+ · .*)\n", output, flags=re.MULTILINE)
    found = []
    for i in range(1, len(parts), 2):
        if parts[i].startswith("── example"):
            before_row_title = i + 2 < len(parts) and not parts[i + 2].startswith("── example")
            body = parts[i + 1][: -2 if before_row_title else -1]
            found.append((parts[i], body.replace("↵\n", "\n")))
    return found


def test_plain_output_marks_exactly_the_trained_tokens(build, tokenizer):
    manifest, checked = load_manifest(build), {"rows": 0, "runs": 0, "multi": 0}
    for split in manifest["splits"]:
        for index, row in enumerate(read_rows(build, split)):
            result = CliRunner().invoke(
                app, ["inspect", str(build), "--split", split, "--row", str(index)]
            )
            assert result.exit_code == 0, result.output
            shown = plain_segments(result.output)
            expected = list(segments(row))
            assert len(shown) == len(expected)
            for (header, body), (example_id, ids, mask) in zip(shown, expected):
                path, file_row = source_row(manifest, example_id)
                assert header.startswith(
                    f"── example {example_id} — {path} row {file_row} · {len(ids)} tokens, {sum(mask)} trained"
                )
                assert re.findall(r"⟦(.*?)⟧", body, flags=re.DOTALL) == trained_runs(
                    tokenizer, ids, mask
                )
                assert body.replace("⟦", "").replace("⟧", "") == tokenizer.decode(
                    ids, skip_special_tokens=False
                )
                checked["runs"] += len(trained_runs(tokenizer, ids, mask))
            checked["rows"] += 1
            checked["multi"] += len(expected) > 1
    assert checked["rows"] >= 2 and checked["runs"] >= 20 and checked["multi"] >= 1, checked


def test_example_shows_only_its_segment_in_any_split(build, tokenizer):
    manifest = load_manifest(build)
    for split in manifest["splits"]:
        row = read_rows(build, split)[0]
        example_id, ids, mask = list(segments(row))[-1]
        result = CliRunner().invoke(app, ["inspect", str(build), "--example", str(example_id)])
        assert result.exit_code == 0, result.output
        shown = plain_segments(result.output)
        path, file_row = source_row(manifest, example_id)
        assert len(shown) == 1 and f"example {example_id} — {path} row {file_row}" in shown[0][0]
        assert re.findall(r"⟦(.*?)⟧", shown[0][1], flags=re.DOTALL) == trained_runs(
            tokenizer, ids, mask
        )
        assert f"{split} row 0 of" in result.output


def test_row_option_and_default(build):
    first = CliRunner().invoke(app, ["inspect", str(build)])
    again = CliRunner().invoke(app, ["inspect", str(build), "--row", "0", "--split", "train"])
    assert (
        first.exit_code == 0 and first.output == again.output and "train row 0 of" in first.output
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--row", "9999"], "--row 9999"),
        (["--example", "9999"], "--example 9999"),
        (["--row", "0", "--example", "1"], "not both"),
        (["--split", "validation"], "--split validation"),
    ],
)
def test_errors_name_the_option(build, args, message):
    result = CliRunner().invoke(app, ["inspect", str(build), *args])
    assert (
        result.exit_code == 1 and result.output.startswith("error: ") and message in result.output
    )


def test_not_a_build_and_moved_tokenizer(build, tmp_path):
    result = CliRunner().invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 1 and "manifest.json" in result.output
    moved = tmp_path / "b"
    shutil.copytree(build, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["tokenizer"]["name_or_path"] = str(tmp_path / "gone")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    assert (
        CliRunner().invoke(app, ["inspect", str(moved)], env={"HF_HUB_OFFLINE": "1"}).exit_code == 1
    )
    result = CliRunner().invoke(app, ["inspect", str(moved), "--tokenizer", str(BUNDLED_TOKENIZER)])
    assert result.exit_code == 0 and "⟦" in result.output


def test_terminal_output_uses_colour_not_brackets(build):
    view = BuildView(build)
    stream = io.StringIO()
    print_rich(
        view,
        select(view, "train", 0, None),
        Console(file=stream, force_terminal=True, color_system="standard", width=120),
    )
    text = stream.getvalue()
    assert "\x1b[42m" in text and "⟦" not in text  # green background on trained tokens
    assert "\x1b[1;35m<|im_end|>" in text or "\x1b[1;35;42m<|im_end|>" in text


class TokenSpans(HTMLParser):
    """Collects, per row section, each token span's (id, classes) and notes anything external."""

    def __init__(self):
        super().__init__()
        self.rows: dict[int, list[tuple[int, set]]] = {}
        self.stack: list[str] = []
        self.row = None
        self.in_h2 = False
        self.legend = False
        self.external = []
        self.tags = set()
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.external += [
            v for k, v in attrs.items() if k in ("src", "href") or (v and "http" in v)
        ]
        self.external += [tag] if tag in ("script", "link", "img", "iframe") else []
        classes = set((attrs.get("class") or "").split())
        self.legend |= "legend" in classes
        if tag == "h2":
            self.in_h2 = True
        if tag == "span" and "tok" in classes and self.row is not None and not self.inside_legend():
            self.rows[self.row].append(
                (int(re.fullmatch(r"id (\d+) · pos \d+", attrs["title"]).group(1)), classes)
            )
        self.stack.append("legend" if "legend" in classes else "tok" if "tok" in classes else tag)

    def inside_legend(self):
        return "legend" in self.stack

    def handle_endtag(self, tag):
        self.stack.pop()
        self.in_h2 = False

    def handle_data(self, data):
        if "tok" in self.stack:
            self.texts.append(data)
        match = re.match(r"train row (\d+) of", data) if self.in_h2 else None
        if match:
            self.row = int(match.group(1))
            self.rows[self.row] = []


def test_html_page_highlights_exactly_the_trained_tokens(build, tmp_path, tokenizer):
    page = tmp_path / "page.html"
    result = CliRunner().invoke(
        app, ["inspect", str(build), "--html", str(page), "--rows", "3", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    text = page.read_text()
    parser = TokenSpans()
    parser.feed(text)
    rows = read_rows(build, "train")
    assert parser.legend and not parser.external, parser.external
    assert len(parser.rows) == min(3, len(rows)) >= 2
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    trained = 0
    for index, spans in parser.rows.items():
        row = rows[index]
        assert [i for i, _ in spans] == row[INPUT_IDS]
        assert [i for i, c in spans if "trained" in c] == [
            i for i, m in zip(row[INPUT_IDS], row[LOSS_MASK]) if m
        ]
        assert all(("trained" in c) != ("untrained" in c) for _, c in spans)
        assert [i for i, c in spans if "special" in c] == [
            i for i in row[INPUT_IDS] if i in special
        ]
        trained += sum(row[LOSS_MASK])
        for example_id, _, _ in segments(row):
            path, file_row = source_row(load_manifest(build), example_id)
            assert f"example {example_id} — {path} row {file_row}" in text
    assert trained > 0
    again = tmp_path / "again.html"
    CliRunner().invoke(
        app, ["inspect", str(build), "--html", str(again), "--rows", "3", "--seed", "1"]
    )
    assert again.read_text() == text, "the sample is seeded"


def test_html_escapes_the_data(build, tmp_path):
    hostile_id = next(
        s for s in load_manifest(build)["sources"] if s["path"].endswith("hostile.jsonl")
    )["example_id_start"]
    page = tmp_path / "page.html"
    result = CliRunner().invoke(
        app, ["inspect", str(build), "--example", str(hostile_id), "--html", str(page)]
    )
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "&lt;" in text and "&quot;" in text
    parser = TokenSpans()
    parser.feed(text)
    assert parser.tags <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "h1",
        "h2",
        "div",
        "section",
        "span",
        "b",
        "strong",
    }, parser.tags
    assert not parser.external and sum(len(s) for s in parser.rows.values()) > 0
    shown = "".join(parser.texts)
    assert (
        "<script>alert('x')</script> & \"quotes\" café" in shown
        and "<b>bold</b> &amp; 你好 😀" in shown
    )


def test_example_cut_by_wrapped_packing_shows_every_piece(tmp_path, tokenizer):
    out = tmp_path / "wrapped"
    sftprep.build(
        {
            "sources": [str(EXAMPLES / "data" / "text.jsonl")],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(out),
            "max_length": 16,
            "packing": "wrapped",
            "num_proc": 1,
        }
    )
    pieces: dict[int, list] = {}
    for row in read_rows(out):
        for example_id, ids, mask in segments(row):
            pieces.setdefault(example_id, []).append((ids, mask))
    example_id, expected = next((e, p) for e, p in sorted(pieces.items()) if len(p) > 1)
    result = CliRunner().invoke(app, ["inspect", str(out), "--example", str(example_id)])
    assert result.exit_code == 0, result.output
    shown = plain_segments(result.output)
    assert len(shown) == len(expected) and all(
        f"example {example_id} — " in header for header, _ in shown
    )
    decoded = sorted(tokenizer.decode(ids, skip_special_tokens=False) for ids, _ in expected)
    assert sorted(body.replace("⟦", "").replace("⟧", "") for _, body in shown) == decoded


def test_a_damaged_id_is_one_line_not_a_tokenizer_traceback(build, tmp_path):
    import pyarrow as pa

    from schemas import row_schema
    from schemas.manifest import file_sha256

    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    manifest = load_manifest(copy)
    shard = manifest["splits"]["train"]["shards"][0]
    rows = read_rows(copy, "train")[: shard["rows"]]
    table = pa.ipc.open_stream(pa.memory_map(str(copy / shard["path"]))).read_all().to_pylist()
    table[0][INPUT_IDS][1] = 10**7  # an id no tokenizer has
    with (
        pa.OSFile(str(copy / shard["path"]), "wb") as sink,
        pa.ipc.new_stream(sink, row_schema()) as writer,
    ):
        writer.write_table(pa.Table.from_pylist(table, schema=row_schema()))
    shard["bytes"], shard["sha256"] = (
        (copy / shard["path"]).stat().st_size,
        file_sha256(copy / shard["path"]),
    )
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert rows  # guard
    result = CliRunner().invoke(app, ["inspect", str(copy), "--row", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        result.output.startswith("error: token id 10000000 is outside the tokenizer's")
        and result.output.count("\n") == 1
    )
