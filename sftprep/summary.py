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

from schemas.manifest import Manifest

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


def print_summary(manifest: Manifest, out: str, seconds: float) -> None:
    """What `sftprep stats` shows of a build: per source rows read/kept/dropped by reason, per
    split tokens, loss tokens and packing; then the time and fingerprint."""
    from sftprep.tools.stats import source_table, split_table

    console = Console(width=None if Console().is_terminal else 160)
    console.print(f"sftprep build -> {out}", highlight=False)
    console.print(source_table(manifest))
    console.print(split_table(manifest))
    console.print(f"done in {seconds:.1f}s, fingerprint {manifest.fingerprint[:12]}")
