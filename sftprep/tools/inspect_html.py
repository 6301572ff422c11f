"""`sftprep inspect --html FILE`: one self-contained page (inline CSS, no scripts, no external
assets) showing rows token by token.

Every token is `<span class="tok trained|untrained [special]" title="id 28 · pos 5">text</span>`;
a segment starts with a header naming its example id, source file and row. All text is escaped.
"""

import html
from pathlib import Path

from sftprep.errors import SftprepError
from sftprep.tools.inspect_text import NEWLINE_MARK, Shown, segment_title, select
from sftprep.tools.view import BuildView, Token

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1d232a; background: #fff; }
h1 { font-size: 1.3em; margin-bottom: .2em; }
.meta { color: #555; font-size: .9em; }
.legend { display: flex; gap: 1.2em; flex-wrap: wrap; align-items: center; padding: .6em .8em;
          border: 1px solid #ccd; border-radius: 6px; background: #f7f8fa; margin: 1em 0; font-size: .9em; }
.row { border: 1px solid #ccd; border-radius: 6px; margin: 1.2em 0; overflow: hidden; }
.row h2 { font-size: 1em; margin: 0; padding: .5em .8em; background: #eef1f5; }
.stats { display: flex; gap: 1.5em; padding: .3em .8em; font-size: .85em; color: #333; border-bottom: 1px solid #dde; }
.seg-head { font-size: .8em; color: #1f4f82; background: #e6f0fb; border-top: 2px solid #5b8fd0;
            padding: .2em .8em; font-family: system-ui, sans-serif; }
.tokens { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em; white-space: pre-wrap;
          word-break: break-word; padding: .4em .8em; line-height: 1.7; }
.tok { border-right: 1px solid rgba(0,0,0,.08); }
.tok.trained { background: #b7ebc1; color: #0b3d16; }
.tok.untrained { color: #555; }
.tok.special { font-weight: bold; color: #8a1f9c; background: #f3e4f7; }
.tok.special.trained { background: #b7ebc1; outline: 1px solid #8a1f9c; }
.nl { color: #aaa; }
"""

LEGEND = (
    '<div class="legend"><strong>legend</strong>'
    '<span><span class="tok trained">trained</span> loss_mask 1 (counts toward the loss)</span>'
    '<span><span class="tok untrained">untrained</span> loss_mask 0</span>'
    '<span><span class="tok special untrained">&lt;|special|&gt;</span> special token</span>'
    '<span><span class="tok special trained">&lt;|special|&gt;</span> trained special token</span>'
    f'<span><span class="nl">{NEWLINE_MARK}</span> newline</span>'
    '<span><span class="seg-head">example N — file row R</span> start of an example</span>'
    "<span>hover a token for its id</span></div>"
)


def token_span(token: Token, position: int) -> str:
    """One token as an escaped `<span>` with its class and a title holding its id."""
    classes = (
        "tok "
        + ("trained" if token.trained else "untrained")
        + (" special" if token.special else "")
    )
    parts = html.escape(token.text).split("\n")
    body = f'<span class="nl">{NEWLINE_MARK}</span>\n'.join(parts)
    return f'<span class="{classes}" title="id {token.id} · pos {position}">{body}</span>'


def row_section(view: BuildView, item: Shown) -> str:
    """A row's header, its stats and every shown segment's tokens."""
    row = item.row
    stats = (
        f"<span>tokens <b>{row.num_tokens:,}</b></span><span>loss tokens <b>{row.num_loss_tokens:,}</b></span>"
        f"<span>segments <b>{len(row.segments)}</b></span><span>fill <b>{row.fill:.1%}</b> of {row.max_length}</span>"
    )
    total = view.split_info(row.split).rows
    parts = [
        f'<section class="row"><h2>{html.escape(row.split)} row {row.index} of {total}</h2><div class="stats">{stats}</div>'
    ]
    position = 0
    for segment in row.segments:
        if item.example is None or segment.example_id == item.example:
            spans = "".join(token_span(t, position + i) for i, t in enumerate(segment.tokens))
            parts.append(
                f'<div class="seg-head">{html.escape(segment_title(segment))}</div><div class="tokens">{spans}</div>'
            )
        position += len(segment.tokens)
    parts.append("</section>")
    return "".join(parts)


def render_html(view: BuildView, shown: list[Shown], note: str = "") -> str:
    """The whole page as a string."""
    m = view.manifest
    meta = (
        f"build {view.dir} · fingerprint {m.fingerprint[:12]} · tokenizer {m.tokenizer.name_or_path} · "
        f"sftprep {m.sftprep_version}" + (f" · {note}" if note else "")
    )
    body = "".join(row_section(view, item) for item in shown) or "<p>no rows in this split</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>sftprep inspect {html.escape(view.dir.name)}</title><style>{CSS}</style></head><body>"
        f'<h1>sftprep inspect</h1><div class="meta">{html.escape(meta)}</div>{LEGEND}{body}</body></html>\n'
    )


def write_html(view: BuildView, shown: list[Shown], path: str | Path, note: str = "") -> None:
    """Write the page for `shown` to `path`."""
    try:
        Path(path).write_text(render_html(view, shown, note), encoding="utf-8")
    except OSError as err:
        raise SftprepError(
            f"--html {path}: cannot write it ({err.strerror}); choose a writable path"
        ) from None


def run_inspect_html(  # noqa: PLR0913 - one argument per `sftprep inspect --html` option
    build_dir: str,
    html: str,
    split: str | None = None,
    row: int | None = None,
    example: int | None = None,
    sample: int = 20,
    seed: int = 0,
    tokenizer: str | None = None,
) -> str:
    """`sftprep inspect --html`: write a page of the chosen rows (a seeded sample by default);
    returns the line to print."""
    view = BuildView(build_dir, tokenizer)
    by_sample = row is None and example is None
    shown = select(view, split, row, example, sample if by_sample else None, seed)
    count = f"{len(shown)} row{'s' if len(shown) != 1 else ''}"
    note = f"seeded sample of {count} (--rows {sample} --seed {seed})" if by_sample else ""
    write_html(view, shown, html, note)
    return f"wrote {html}: {count}"
