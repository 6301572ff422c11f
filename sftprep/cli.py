"""`sftprep` command line: flags map one to one onto BuildConfig keys (see sftprep/config.py).

verify/inspect/stats/diff import their modules when they run, so that `sftprep build` starts faster."""

from sftprep import cli_start  # first: it owns Ctrl-C while the imports below load

# isort: split
import inspect
import re
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from schemas.config_fields import cli_parameters, config_file_parameter, json_flag
from sftprep.config import BuildConfig, load_config
from sftprep.errors import ConfigError, SftprepError
from sftprep.pipeline import run_build
from sftprep.summary import build_progress, print_summary

cli_start.hand_over()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Prepare SFT data once: exact ids, loss masks, packed Arrow shards.",
)


ESCAPED_FLAGS = (
    "prompt_template",
    "completion_template",
    "response_template",
    "instruction_template",
)
"""Flags whose backslash escapes are decoded: a shell passes `\\n` as two characters."""
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def typed_escapes(value: str | None) -> str | None:
    """`\\n`, `\\t`, `\\r` and `\\\\` as typed on a command line, decoded; any other backslash
    kept as typed. Not `unicode_escape`, which would mangle every non-ASCII character."""
    if value is None:
        return None
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], value)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def user_errors(on_interrupt: str = "interrupted"):
    """Turn a SftprepError or an OSError (disk full, read-only folder) into one line on stderr and
    exit code 1; Ctrl-C, SIGTERM (container
    stop, Slurm preemption, `timeout`) and SIGHUP into one line and 130, after the same clean-up
    (the temporary folder removed, worker processes stopped); anything else is a bug and keeps its
    traceback."""
    cli_start.hand_over()  # from here on an interrupt gets the clean-up below
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except SftprepError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2 if isinstance(err, ConfigError) else 1) from None
    except KeyboardInterrupt:
        typer.echo(on_interrupt, err=True)
        raise typer.Exit(130) from None
    except OSError as err:  # disk full, a read-only or vanished folder: the machine, not a bug
        where = f"{err.filename}: " if err.filename else ""
        typer.echo(
            f"error: {where}{err.strerror or err}; nothing was written, the previous build (if any) is intact",
            err=True,
        )
        raise typer.Exit(1) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.callback()
def main() -> None:
    """sftprep: build SFT data into memory-mappable Arrow shards plus a manifest."""


def build(config: Path | None = None, quiet: bool = False, **flags) -> None:
    """Read SOURCE files, render, tokenize, mask, pack and write shards + manifest.json to --out."""
    flags = {k: tuple(v) if isinstance(v, list) else v for k, v in flags.items()}
    started = time.perf_counter()
    with user_errors("interrupted: nothing was written; the previous build (if any) is intact"):
        flags = {k: typed_escapes(v) if k in ESCAPED_FLAGS else v for k, v in flags.items()}
        if flags.get("chat_template_kwargs") is not None:
            flags["chat_template_kwargs"] = json_flag(
                flags["chat_template_kwargs"], "--chat-template-kwargs", SftprepError
            )
        cfg = load_config(
            str(config) if config else None,
            {k: v or None if isinstance(v, tuple) else v for k, v in flags.items()},
        )
        with build_progress(enabled=not quiet) as progress:
            result = run_build(cfg, progress)
    if result.repaired:
        typer.echo(
            f"note: {cfg.out} held this build damaged ({result.repaired}); rebuilt it", err=True
        )
    if result.up_to_date:
        typer.echo(
            f"up to date: {cfg.out} already holds this build (fingerprint {result.manifest.fingerprint[:12]})"
        )
        return
    if not quiet:
        print_summary(result.manifest, cfg.out, time.perf_counter() - started)


def _build_signature() -> inspect.Signature:
    """build()'s parameters: SOURCE..., one option per BuildConfig field, then --config and -q."""
    extra = [
        config_file_parameter(),
        inspect.Parameter(
            "quiet",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
            ],
        ),
    ]
    return inspect.Signature(cli_parameters(BuildConfig, positional="sources") + extra)


build.__signature__ = _build_signature()
app.command()(build)


@app.command()
def verify(
    build_dir: Path = typer.Argument(
        ..., metavar="DIR", help="A build folder written by `sftprep build`."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Only the manifest and shard sizes (no hashing, no row checks)."
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help="Also build it again with --encoder hf (the sources and tokenizer it was built from) "
        "and compare every shard: every row's ids and mask checked against the HF encoder.",
    ),
) -> None:
    """Check a build: manifest schema, shard sizes and sha256, Arrow schema, and the packing invariants."""
    from sftprep.tools.verify import verify_build

    problems = verify_build(build_dir, deep=not quick)
    if full and not problems:
        from sftprep.tools.reencode import reencode_problems

        problems = reencode_problems(build_dir)
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {build_dir} is a complete, consistent build")


@app.command("inspect")
def inspect_command(
    build_dir: Path = typer.Argument(
        ..., metavar="DIR", help="A build folder written by `sftprep build`."
    ),
    split: str | None = typer.Option(
        None, "--split", help="train | eval (default: train; --example searches every split)."
    ),
    row: int | None = typer.Option(
        None, "--row", help="Show this row (0-based, over all shards of the split; default 0)."
    ),
    example: int | None = typer.Option(
        None, "--example", help="Show only this example id, in the row(s) holding it."
    ),
    html: Path | None = typer.Option(
        None,
        "--html",
        help="Write one self-contained HTML page of a seeded sample of rows instead.",
    ),
    rows: int = typer.Option(20, "--rows", help="--html: how many rows to sample."),
    seed: int = typer.Option(0, "--seed", help="--html: seeds the sample of rows."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Tokenizer folder, when the path the manifest records has moved."
    ),
) -> None:
    """Decode a packed row token by token: trained tokens highlighted, examples and their source rows named.

    In a terminal, trained tokens (loss_mask 1) are on green and special tokens bold magenta; when the output is not a terminal, trained tokens are wrapped in ⟦ ⟧. Newlines show as ↵.
    """
    with user_errors():
        if html:
            from sftprep.tools.inspect_html import run_inspect_html

            done = run_inspect_html(
                str(build_dir), str(html), split, row, example, rows, seed, tokenizer
            )
            typer.echo(done)
            return
        from sftprep.tools.inspect_text import run_inspect

        run_inspect(str(build_dir), split, row, example, tokenizer)


@app.command("stats")
def stats_command(
    build_dir: Path = typer.Argument(
        ..., metavar="DIR", help="A build folder written by `sftprep build`."
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Also write a PNG: example-length histogram and per-row fill (needs sftprep[plot]).",
    ),
) -> None:
    """A build's numbers: per split (examples, rows, tokens, loss tokens and ratio, packing efficiency) and per source."""
    with user_errors():
        from sftprep.tools.stats import run_stats

        run_stats(str(build_dir), str(plot) if plot else None)


@app.command("diff")
def diff_command(
    dir_a: Path = typer.Argument(..., metavar="DIR_A", help="A build folder."),
    dir_b: Path = typer.Argument(..., metavar="DIR_B", help="Another build folder."),
    examples: int = typer.Option(
        3, "--examples", help="Show the first N differing examples in detail."
    ),
) -> None:
    """What differs between two builds: config, tokenizer, sources, splits and the first differing tokens.

    Prints `identical` when both have the same fingerprint and intact shards (else it names the damaged side). Exit code 0 whenever the comparison ran (identical or not); 1 only on an error (e.g. a folder that is not a build).
    """
    with user_errors():
        from sftprep.tools.diff import diff_builds

        lines = diff_builds(str(dir_a), str(dir_b), examples)
    typer.echo("\n".join(lines))


def run() -> None:
    """The `sftprep` command: the app, with a signal before a command's own handling begins (while
    typer builds the commands and parses the flags) one line and exit code 130 (cli_start)."""
    cli_start.take_over()
    app()


if __name__ == "__main__":  # pragma: no cover
    run()
