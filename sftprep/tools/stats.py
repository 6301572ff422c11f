"""`sftprep stats`: a build's numbers as tables, and with `--plot` a figure of example lengths and
row fill. Tables come from the manifest alone; the plot also reads the shards' `num_tokens` column.
"""

from pathlib import Path

from rich.console import Console
from rich.table import Table

from schemas import NUM_TOKENS
from schemas.manifest import Manifest
from sftprep.config import recorded_config
from sftprep.errors import SftprepError
from sftprep.tools.view import BuildView

PLOT_HINT = "pip install 'sftprep[plot]'"


def split_table(manifest: Manifest) -> Table:
    """Per split: examples, rows, tokens, loss tokens, loss-token ratio, packing efficiency."""
    table = Table(title="splits", title_justify="left")
    for col in (
        "split",
        "examples",
        "rows",
        "tokens",
        "loss tokens",
        "loss ratio",
        "packing",
        "efficiency",
        "shards",
    ):
        table.add_column(col, justify="left" if col in ("split", "packing") else "right")
    for name, s in manifest.splits.items():
        ratio = s.loss_tokens / s.tokens if s.tokens else 0.0
        table.add_row(
            name,
            f"{s.examples:,}",
            f"{s.rows:,}",
            f"{s.tokens:,}",
            f"{s.loss_tokens:,}",
            f"{ratio:.2%}",
            f"{s.packing} @ {s.max_length}",
            f"{s.packing_efficiency:.2%}",
            str(len(s.shards)),
        )
    return table


def source_table(manifest: Manifest) -> Table:
    """Per source: rows read/kept, dropped by reason, truncated (examples and tokens cut), tokens;
    with --overlong split also how many examples were split; for a recipe with per-source settings,
    what each source asked for and its share of the split's loss tokens; for conversations, how
    their turns were located (SourceEntry.turns_located_by)."""
    table = Table(title="sources", title_justify="left")
    show_split = recorded_config(manifest).overlong == "split"
    columns = [
        "source",
        "format",
        "split",
        "read",
        "kept",
        "dropped (reason)",
        "truncated (tokens cut)",
    ]
    mixed = any(s.settings for s in manifest.sources)
    extra = ["asked", "examples", "loss share"] if mixed else []
    located = any(s.turns_located_by for s in manifest.sources)
    extra += ["turns located by"] * located
    for col in columns + ["split examples"] * show_split + ["tokens", "loss tokens", *extra]:
        table.add_column(
            col,
            justify="left"
            if col in ("source", "format", "split", "dropped (reason)", "asked", "turns located by")
            else "right",
            overflow="fold",
        )
    for s in manifest.sources:
        dropped = ", ".join(f"{n:,} {reason}" for reason, n in sorted(s.dropped.items())) or "0"
        cells = [
            s.path,
            s.format,
            s.split,
            f"{s.rows_read:,}",
            f"{s.rows_kept:,}",
            dropped,
            f"{s.truncated:,} ({s.truncated_tokens:,})",
        ]
        table.add_row(
            *cells,
            *[f"{s.split_examples:,}"] * show_split,
            f"{s.tokens:,}",
            f"{s.loss_tokens:,}",
            *(
                [_asked(s, manifest.sources), f"{s.examples:,}", f"{s.loss_share:.1%}"]
                if mixed
                else []
            ),
            *[_located(s.turns_located_by)] * located,
        )
    return table


def _located(turns_located_by: dict) -> str:
    """`loop-steps 1,643, every-prefix 357`: the most used way first; `-` for none."""
    ways = sorted(turns_located_by.items(), key=lambda item: -item[1])
    return ", ".join(f"{way} {n:,}" for way, n in ways) or "-"


def _asked(source, sources) -> str:
    """A source's own settings, short: `take 500, loss_on all`; a weight with the share it asks
    of its split's loss tokens: `weight 3 (75.0%)`."""
    asked = ", ".join(f"{k} {v}" for k, v in source.settings.items()) or "-"
    if "weight" not in source.settings:
        return asked
    weights = sum(s.settings.get("weight", 0) for s in sources if s.split == source.split)
    return f"{asked} ({source.settings['weight'] / weights:.1%} of loss tokens)"


def print_stats(view: BuildView, console: Console) -> None:
    """Both tables and the build's identity."""
    m = view.manifest
    console.print(
        f"build {view.dir} · fingerprint {m.fingerprint[:12]} · sftprep {m.sftprep_version} · "
        f"tokenizer {m.tokenizer.name_or_path} ({m.tokenizer.length:,} ids)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(split_table(m))
    console.print(source_table(m))
    dropped = ", ".join(f"{n:,} {reason}" for reason, n in sorted(m.dropped.items())) or "none"
    console.print(f"dropped in all: {dropped}", highlight=False)


def _figure_class():
    """matplotlib's Figure and Agg canvas, imported only when a plot is asked for."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SftprepError(
            f"--plot needs matplotlib, which is not installed: {PLOT_HINT}"
        ) from None
    return Figure, FigureCanvasAgg


def write_plot(view: BuildView, path: str | Path) -> None:
    """A PNG with the example-length histogram per split and the per-row fill (num_tokens / max_length)."""
    Figure, FigureCanvasAgg = _figure_class()
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    lengths, fill = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, s in view.manifest.splits.items():
        hist = s.length_histogram
        edges, counts = hist["bin_edges"], hist["counts"]
        lengths.stairs(
            counts, edges, fill=True, alpha=0.5, label=f"{name} ({s.examples:,} examples)"
        )
        rows = view.column(name, NUM_TOKENS) / s.max_length
        if len(rows):
            fill.hist(
                rows,
                bins=20,
                range=(0, 1),
                alpha=0.5,
                label=f"{name} ({len(rows):,} rows, mean {rows.mean():.1%})",
            )
    lengths.set(
        title="example length (tokens, after the length policy)", xlabel="tokens", ylabel="examples"
    )
    fill.set(title="row fill (num_tokens / max_length)", xlabel="fill", ylabel="rows", xlim=(0, 1))
    for ax in (lengths, fill):
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"{view.dir.name} · fingerprint {view.manifest.fingerprint[:12]}")
    try:
        fig.savefig(path, format="png", dpi=110)
    except OSError as err:
        raise SftprepError(
            f"--plot {path}: cannot write it ({err.strerror}); choose a writable path"
        ) from None


def run_stats(build_dir: str, plot: str | None = None, console: Console | None = None) -> None:
    """The `sftprep stats` command."""
    view = BuildView(build_dir)
    console = console or Console(width=None if Console().is_terminal else 200)
    if plot:
        _figure_class()  # fail before printing anything when matplotlib is missing
    print_stats(view, console)
    if plot:
        write_plot(view, plot)
        console.print(f"wrote {plot}", highlight=False)
