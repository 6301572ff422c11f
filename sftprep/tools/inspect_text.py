"""`sftprep inspect`: show what a packed row really holds, token by token.

In a terminal, trained tokens (loss_mask 1) have a green background and special tokens are bold
magenta. Anywhere else (a pipe, a file) the output is plain text where trained tokens sit inside
`⟦ ⟧`. Both show each newline as `↵` before the line break and open every example with a line
naming its id and where it came from::

    ── example 3 — data/chat.jsonl row 3 · 41 tokens, 12 trained ──
    <|im_start|>user↵
    Hi<|im_end|>↵
    <|im_start|>assistant↵
    ⟦Hello!<|im_end|>⟧↵
"""

import random
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

from sftprep.errors import SftprepError
from sftprep.tools.view import BuildView, DecodedRow, Segment

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"
NEWLINE_MARK = "↵"
TRAINED_STYLE = "on dark_green"
SPECIAL_STYLE = "bold magenta"


@dataclass
class Shown:
    """A decoded row to show; `example` limits it to that example's segment(s)."""

    row: DecodedRow
    example: int | None = None

    @property
    def segments(self) -> list[Segment]:
        return [
            s for s in self.row.segments if self.example is None or s.example_id == self.example
        ]


def select(
    view: BuildView,
    split: str | None,
    row: int | None,
    example: int | None,
    sample: int | None = None,
    seed: int = 0,
) -> list[Shown]:
    """The rows to show: `--row N`, the row(s) holding `--example ID`, a seeded sample of `sample`
    rows, or else row 0 of the split (train by default; --example searches every split unless --split)."""
    if row is not None and example is not None:
        raise SftprepError("pass --row or --example, not both")
    if example is not None:
        found = view.find_example(example, [split] if split else view.splits)
        if not found:
            where = f"split {split}" if split else "any split"
            raise SftprepError(
                f"--example {example}: no row of {where} holds it (dropped, or not in this build; see `sftprep stats {view.dir}`)"
            )
        return [Shown(view.decode(s, i), example) for s, i in found]
    split = split or "train"
    total = view.split_info(split).rows
    if row is not None:
        return [Shown(view.decode(split, row))]
    if sample is not None:
        if sample < 1:
            raise SftprepError(f"--rows {sample}: must be at least 1")
        picked = sorted(random.Random(seed).sample(range(total), min(sample, total)))
        return [Shown(view.decode(split, i)) for i in picked]
    if not total:
        raise SftprepError(f"split {split} has no rows")
    return [Shown(view.decode(split, 0))]


def row_title(view: BuildView, row: DecodedRow) -> str:
    """`train row 0 of 2 · 471 tokens · 102 loss tokens · 9 segments · 92.0% full (max_length 512)`."""
    total = view.split_info(row.split).rows
    return (
        f"{row.split} row {row.index} of {total} · {row.num_tokens:,} tokens · {row.num_loss_tokens:,} loss tokens · "
        f"{len(row.segments)} segment{'s' if len(row.segments) != 1 else ''} · {row.fill:.1%} full (max_length {row.max_length})"
    )


def segment_title(segment: Segment) -> str:
    """`example 17 — data/chat.jsonl row 3 · 41 tokens, 12 trained`."""
    where = (
        segment.source
        if segment.source_row is None
        else f"{segment.source} row {segment.source_row}"
    )
    trained = sum(t.trained for t in segment.tokens)
    return (
        f"example {segment.example_id} — {where} · {len(segment.tokens)} tokens, {trained} trained"
    )


def visible(text: str) -> str:
    """Newlines shown as `↵` and kept as line breaks."""
    return text.replace("\n", NEWLINE_MARK + "\n")


def render_plain(view: BuildView, shown: list[Shown]) -> str:
    """Plain text: trained tokens inside ⟦ ⟧ (runs of them share one pair), newlines as ↵."""
    lines = [
        f"legend: {TRAINED_OPEN}trained{TRAINED_CLOSE} = loss_mask 1; {NEWLINE_MARK} = newline; special tokens as written, e.g. <|im_end|>"
    ]
    for item in shown:
        lines += ["", row_title(view, item.row)]
        for segment in item.segments:
            lines.append(f"── {segment_title(segment)} ──")
            out, inside = [], False
            for token in segment.tokens:
                if token.trained != inside:
                    out.append(TRAINED_OPEN if token.trained else TRAINED_CLOSE)
                    inside = token.trained
                out.append(visible(token.text))
            if inside:
                out.append(TRAINED_CLOSE)
            lines.append("".join(out))
    return "\n".join(lines) + "\n"


def print_rich(view: BuildView, shown: list[Shown], console: Console) -> None:
    """Colour for a terminal: trained tokens on green, special tokens bold magenta."""
    legend = Text("legend: ")
    legend.append("trained", TRAINED_STYLE).append("  untrained  ").append(
        "<|special|>", SPECIAL_STYLE
    )
    legend.append("  ").append(NEWLINE_MARK, "dim").append(" newline")
    console.print(legend)
    for item in shown:
        console.print()
        console.print(Text(row_title(view, item.row), style="bold"))
        for segment in item.segments:
            console.rule(Text(segment_title(segment)), align="left", style="cyan")
            text = Text()
            for token in segment.tokens:
                style = " ".join(
                    s
                    for s, on in ((SPECIAL_STYLE, token.special), (TRAINED_STYLE, token.trained))
                    if on
                )
                for i, line in enumerate(token.text.split("\n")):
                    if i:
                        text.append(NEWLINE_MARK, f"dim {style}".strip()).append("\n")
                    text.append(line, style)
            console.print(text, soft_wrap=True)


def run_inspect(
    build_dir: str,
    split: str | None = None,
    row: int | None = None,
    example: int | None = None,
    tokenizer: str | None = None,
    console: Console | None = None,
) -> None:
    """`sftprep inspect` without --html: print the chosen rows (rich in a terminal, else plain)."""
    view = BuildView(build_dir, tokenizer)
    console = console or Console()
    shown = select(view, split, row, example)
    if console.is_terminal:
        print_rich(view, shown, console)
    else:
        console.file.write(render_plain(view, shown))
