"""`sftprep` command line: flags map one to one onto BuildConfig keys (see sftprep/config.py)."""

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from sftprep.config import load_config
from sftprep.errors import SftprepError
from sftprep.pipeline import run_build
from sftprep.summary import build_progress, print_summary
from sftprep.verify import verify_build

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Prepare SFT data once: exact ids, loss masks, packed Arrow shards.")


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
    num_proc: Optional[int] = typer.Option(None, "--num-proc", help="Worker processes, 0 = all cores; output does not depend on it. [default: 0]"),
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
    try:
        cfg = load_config(str(config) if config else None, overrides)
        with build_progress(enabled=not quiet) as progress:
            result = run_build(cfg, progress)
    except SftprepError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was written; the previous build (if any) is intact", err=True)
        raise typer.Exit(130) from None
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
    problems = verify_build(build_dir, deep=not quick)
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {build_dir} is a complete, consistent build")


if __name__ == "__main__":  # pragma: no cover
    app(sys.argv[1:])
