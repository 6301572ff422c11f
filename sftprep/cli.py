"""`sftprep` command line: flags map one to one onto BuildConfig keys (see sftprep/config.py).

verify/inspect/stats/diff import their modules when they run, so that `sftprep build` starts faster."""

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from sftprep.config import load_config
from sftprep.errors import SftprepError
from sftprep.pipeline import run_build
from sftprep.summary import build_progress, print_summary

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Prepare SFT data once: exact ids, loss masks, packed Arrow shards.")


@contextmanager
def user_errors(on_interrupt: str = "interrupted"):
    """Turn a SftprepError into one line on stderr and exit code 1, Ctrl-C into one line and 130;
    anything else is a bug and keeps its traceback."""
    try:
        yield
    except SftprepError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(on_interrupt, err=True)
        raise typer.Exit(130) from None


@app.callback()
def main() -> None:
    """sftprep: build SFT data into memory-mappable Arrow shards plus a manifest."""


@app.command()
def build(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE...", help="Data files (JSON, JSONL, Parquet, CSV, Arrow), globs, save_to_disk folders or hub names."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer folder (tokenizer.json + tokenizer_config.json) or hub name."),
    out: Optional[str] = typer.Option(None, "--out", help="Build folder to write (atomically)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of config keys; flags override it."),
    eval_sources: Optional[list[str]] = typer.Option(None, "--eval", help="Source(s) of the eval split (repeatable)."),
    eval_fraction: Optional[float] = typer.Option(None, "--eval-fraction", help="Hold out this fraction of examples as eval (seeded, stable). [default: 0]"),
    format: Optional[str] = typer.Option(None, "--format", help="auto | text | messages | prompt-completion. [default: auto]"),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="Column with plain text. [default: text]"),
    messages_field: Optional[str] = typer.Option(None, "--messages-field", help="Column with a conversation. [default: messages, or conversations]"),
    prompt_field: Optional[str] = typer.Option(None, "--prompt-field", help="Column with the prompt. [default: prompt]"),
    completion_field: Optional[str] = typer.Option(None, "--completion-field", help="Column with the completion. [default: completion]"),
    prompt_template: Optional[str] = typer.Option(None, "--prompt-template", help="Format string over any columns making the prompt, e.g. '### Q: {question}\\n### A:'."),
    completion_template: Optional[str] = typer.Option(None, "--completion-template", help="Format string making the completion, e.g. ' {answer}'."),
    formatter: Optional[str] = typer.Option(None, "--formatter", help="module:function returning text, {prompt, completion} or messages per row."),
    chat_template: Optional[str] = typer.Option(None, "--chat-template", help="Jinja file overriding the tokenizer's template, or `chatml`."),
    pad_vocab_to_multiple_of: Optional[int] = typer.Option(None, "--pad-vocab-to-multiple-of", help="With added tokens, the trainer resizes embeddings to a multiple of this."),
    loss_on: Optional[str] = typer.Option(None, "--loss-on", help="assistant | last-assistant | all; a message's `train` key overrides. [default: assistant]"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens per row. [default: 2048]"),
    packing: Optional[str] = typer.Option(None, "--packing", help="bfd | wrapped | none. [default: bfd]"),
    overlong: Optional[str] = typer.Option(None, "--overlong", help="truncate | drop | split an example longer than --max-length. [default: truncate]"),
    truncation_side: Optional[str] = typer.Option(None, "--truncation-side", help="right keeps the start, left keeps the end. [default: right]"),
    concat_token: Optional[bool] = typer.Option(None, "--concat-token/--no-concat-token", help="wrapped packing: EOS between documents. [default: on]"),
    special_tokens: Optional[bool] = typer.Option(None, "--special-tokens/--no-special-tokens", help="text format: add BOS (if the tokenizer does) and EOS. [default: on]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seeds the eval split and the row order. [default: 0]"),
    on_error: Optional[str] = typer.Option(None, "--on-error", help="raise: stop at the first bad row; skip: drop and count it. [default: raise]"),
    shard_size_mb: Optional[int] = typer.Option(None, "--shard-size-mb", help="Approximate shard size. [default: 256]"),
    num_proc: Optional[int] = typer.Option(None, "--num-proc", help="Worker processes; 0 = choose (one process on up to 4 cores, else one per core); output does not depend on it. [default: 0]"),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Replace a different build in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Read SOURCE files, render, tokenize, mask, pack and write shards + manifest.json to --out."""
    overrides = dict(
        sources=tuple(sources) if sources else None,
        eval_sources=tuple(eval_sources) if eval_sources else None,
        tokenizer=tokenizer, out=out, eval_fraction=eval_fraction, format=format, text_field=text_field,
        messages_field=messages_field, prompt_field=prompt_field, completion_field=completion_field,
        prompt_template=prompt_template, completion_template=completion_template, formatter=formatter,
        chat_template=chat_template, pad_vocab_to_multiple_of=pad_vocab_to_multiple_of, loss_on=loss_on,
        max_length=max_length, packing=packing, overlong=overlong, truncation_side=truncation_side,
        concat_token=concat_token, special_tokens=special_tokens, seed=seed, on_error=on_error,
        shard_size_mb=shard_size_mb, num_proc=num_proc, overwrite=overwrite,
    )
    started = time.perf_counter()
    with user_errors("interrupted: nothing was written; the previous build (if any) is intact"):
        cfg = load_config(str(config) if config else None, overrides)
        with build_progress(enabled=not quiet) as progress:
            result = run_build(cfg, progress)
    if result.up_to_date:
        typer.echo(f"up to date: {cfg.out} already holds this build (fingerprint {result.manifest['fingerprint'][:12]})")
        return
    if not quiet:
        print_summary(result.manifest, cfg.out, time.perf_counter() - started)


@app.command()
def verify(
    build_dir: Path = typer.Argument(..., metavar="DIR", help="A build folder written by `sftprep build`."),
    quick: bool = typer.Option(False, "--quick", help="Only the manifest and shard sizes (no hashing, no row checks)."),
) -> None:
    """Check a build: manifest schema, shard sizes and sha256, Arrow schema, and the packing invariants."""
    from sftprep.verify import verify_build
    problems = verify_build(build_dir, deep=not quick)
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {build_dir} is a complete, consistent build")


@app.command("inspect")
def inspect_command(
    build_dir: Path = typer.Argument(..., metavar="DIR", help="A build folder written by `sftprep build`."),
    split: Optional[str] = typer.Option(None, "--split", help="train | eval (default: train; --example searches every split)."),
    row: Optional[int] = typer.Option(None, "--row", help="Show this row (0-based, over all shards of the split; default 0)."),
    example: Optional[int] = typer.Option(None, "--example", help="Show only this example id, in the row(s) holding it."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write one self-contained HTML page of a seeded sample of rows instead."),
    rows: int = typer.Option(20, "--rows", help="--html: how many rows to sample."),
    seed: int = typer.Option(0, "--seed", help="--html: seeds the sample of rows."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer folder, when the path the manifest records has moved."),
) -> None:
    """Decode a packed row token by token: trained tokens highlighted, examples and their source rows named.

    In a terminal, trained tokens (loss_mask 1) are on green and special tokens bold magenta; when the output is not a terminal, trained tokens are wrapped in ⟦ ⟧. Newlines show as ↵.
    """
    with user_errors():
        from sftprep.inspect_build import run_inspect
        run_inspect(str(build_dir), split, row, example, str(html) if html else None, rows, seed, tokenizer)


@app.command("stats")
def stats_command(
    build_dir: Path = typer.Argument(..., metavar="DIR", help="A build folder written by `sftprep build`."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write a PNG: example-length histogram and per-row fill (needs sftprep[plot])."),
) -> None:
    """A build's numbers: per split (examples, rows, tokens, loss tokens and ratio, packing efficiency) and per source."""
    with user_errors():
        from sftprep.build_stats import run_stats
        run_stats(str(build_dir), str(plot) if plot else None)


@app.command("diff")
def diff_command(
    dir_a: Path = typer.Argument(..., metavar="DIR_A", help="A build folder."),
    dir_b: Path = typer.Argument(..., metavar="DIR_B", help="Another build folder."),
    examples: int = typer.Option(3, "--examples", help="Show the first N differing examples in detail."),
) -> None:
    """What differs between two builds: config, tokenizer, sources, splits and the first differing tokens.

    Prints `identical` when both have the same fingerprint. Exit code 0 whenever the comparison ran (identical or not); 1 only on an error (e.g. a folder that is not a build).
    """
    with user_errors():
        from sftprep.build_diff import diff_builds
        lines = diff_builds(str(dir_a), str(dir_b), examples)
    typer.echo("\n".join(lines))


if __name__ == "__main__":  # pragma: no cover
    app(sys.argv[1:])
