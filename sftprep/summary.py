"""What the user sees: a progress bar while rows stream through, and a summary table at the end."""

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

_console = Console(stderr=True)


@contextmanager
def build_progress(enabled: bool = True):
    """Yield a callback(rows, tokens) that advances a progress bar showing rows and tokens/s."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("[bold]building"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=_console,
        transient=True,
    ) as bar:
        task = bar.add_task("build", total=None, rate="")
        state = {"tokens": 0}

        def advance(rows: int, tokens: int) -> None:
            state["tokens"] += tokens
            elapsed = bar.tasks[0].elapsed or 1e-9
            bar.update(task, advance=rows, rate=f"{state['tokens'] / elapsed:,.0f} tokens/s")

        yield advance


def print_summary(manifest: dict, out: str, seconds: float) -> None:
    """One table: per source rows read/kept/dropped by reason, then per split tokens, loss tokens, shards."""
    console = Console(width=None if Console().is_terminal else 160)
    sources = Table(title=f"sftprep build -> {out}", title_justify="left")
    for col in (
        "source",
        "format",
        "split",
        "read",
        "kept",
        "dropped (reason)",
        "truncated",
        "tokens",
        "loss tokens",
    ):
        sources.add_column(
            col,
            justify="right"
            if col not in ("source", "format", "split", "dropped (reason)")
            else "left",
        )
    for s in manifest["sources"]:
        dropped = ", ".join(f"{n} {r}" for r, n in s["dropped"].items()) or "0"
        sources.add_row(
            s["path"],
            s["format"],
            s["split"],
            f"{s['rows_read']:,}",
            f"{s['rows_kept']:,}",
            dropped,
            f"{s['truncated']:,}",
            f"{s['tokens']:,}",
            f"{s['loss_tokens']:,}",
        )
    console.print(sources)
    splits = Table(title_justify="left")
    for col in (
        "split",
        "examples",
        "rows",
        "tokens",
        "loss tokens",
        "packing",
        "efficiency",
        "shards",
    ):
        splits.add_column(col, justify="left" if col in ("split", "packing") else "right")
    for name, s in manifest["splits"].items():
        splits.add_row(
            name,
            f"{s['examples']:,}",
            f"{s['rows']:,}",
            f"{s['tokens']:,}",
            f"{s['loss_tokens']:,}",
            f"{s['packing']} @ {s['max_length']}",
            f"{s['packing_efficiency']:.2%}",
            str(len(s["shards"])),
        )
    console.print(splits)
    console.print(f"done in {seconds:.1f}s, fingerprint {manifest['fingerprint'][:12]}")
