"""`sfttrain run`: the CLI over `sfttrain.train`.

Every config key is a flag (dashes for underscores), generated from TrainConfig so that names,
defaults and help texts live in one place; flags that are given override `--config FILE`.
A SfttrainError prints as one line "error: ..." and exits 1 (2 for a config error); Ctrl-C or
SIGTERM (outside a launcher, which stops its workers with it) prints one line naming the newest
checkpoint that loads and exits 130 / 143; anything else keeps its traceback.
"""

from __future__ import annotations

import atexit
import inspect
import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from schemas.config_fields import cli_parameters, config_file_parameter, flag, json_flag
from sfttrain.config import TrainConfig, load_config
from sfttrain.errors import ConfigError, SfttrainError
from sfttrain.output_dir import is_main_process

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Train on a build made by `sftprep build`."
)
JSON_KEYS = ("model_kwargs", "training_args")


@app.callback()
def main() -> None:
    """sfttrain: fine-tune a causal LM on an sftprep build with transformers.Trainer."""


def run(config: Path | None = None, **flags: Any) -> None:
    """Load the config (file, then flags), train, print the summary (see train's help)."""
    code = 0
    training = None  # the config, once train() has been called with it
    previous_term = signal.signal(signal.SIGTERM, _interrupt) if _alone() else None
    try:
        overrides = {
            key: json_flag(value, flag(key), SfttrainError) if key in JSON_KEYS else value
            for key, value in flags.items()
        }
        train_config = load_config(config, overrides)
        from sfttrain.training import train

        training = train_config
        result = train(train_config)
        if is_main_process():
            print_summary(result)
    except SfttrainError as e:
        typer.echo(f"error: {e}", err=True)
        code = 2 if isinstance(e, ConfigError) else 1
    except OSError as e:  # disk full, a read-only or vanished folder: the machine, not a bug
        where = f"{e.filename}: " if e.filename else ""
        typer.echo(f"error: {where}{e.strerror or e}", err=True)
        code = 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (a scheduler's preemption) via _interrupt
        code = 128 + (e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT)
        if is_main_process():
            typer.echo(interrupted_line(training), err=True)
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    exit_if_distributed(code)
    if code:
        raise typer.Exit(code)


def _alone() -> bool:
    """Whether no launcher started this process among others. Under torchrun a SIGTERM is how the
    launcher stops its workers: each must die at once, even inside a collective that waits for a
    peer that is gone, which a Python handler (run between bytecodes) would not."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1


def _interrupt(signum, frame) -> None:
    """SIGTERM ends a run as Ctrl-C does: the Trainer unwinds (the output folder's lock is
    released), and `run` says what is left to resume from."""
    raise KeyboardInterrupt(signum)


def interrupted_line(config: TrainConfig | None) -> str:
    """One line for an interrupted run: the newest checkpoint that loads, and how to go on;
    `config`: the run's, once training was called (None: interrupted while starting)."""
    if config is None:
        return "interrupted while starting: nothing was trained or written"
    from sfttrain.checkpoints import choose_checkpoint  # loaded already: training imports it

    output_dir = Path(config.output_dir)
    found = choose_checkpoint(output_dir, lambda _: None)[0] if output_dir.is_dir() else None
    if found is None:
        return (
            f"interrupted before a checkpoint was saved in {output_dir}: nothing to resume from; "
            "run again to start over (--save-steps N saves one every N steps)"
        )
    return (
        f"interrupted: training stopped; {found} is the newest checkpoint that loads: "
        "run the same command with --resume to continue from it"
    )


def exit_if_distributed(code: int) -> None:
    """Under torch.distributed with gloo (CPU), or after an interrupt, end the process here,
    atexit handlers included.

    Left to interpreter shutdown, a gloo process group can abort the exit ("terminate called
    without an active exception": a worker thread frees a finished collective's tensors while
    Python finalizes) or deadlock (destroying the group with the GIL held while that thread waits
    for the GIL); both were seen here in about one run in ten. NCCL groups are destroyed normally,
    except after an interrupt: peers may be inside a collective, which destroying would wait for.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    if dist.get_backend() != "gloo" and code < 128:
        dist.destroy_process_group()
        return
    atexit._run_exitfuncs()  # what a normal exit would run: logging integrations, temp files
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def print_summary(result) -> None:
    """The final table: steps, tokens, loss first -> last, time, eval metrics, output."""
    table = Table(title="sfttrain summary", show_header=False)
    table.add_row("steps", str(result.global_step))
    table.add_row("tokens trained", f"{result.tokens:,}")
    table.add_row("loss first -> last", f"{_fmt(result.first_loss)} -> {_fmt(result.last_loss)}")
    table.add_row("time", f"{result.seconds:.1f} s")
    for key in ("eval_loss", "eval_token_accuracy"):
        if key in result.metrics:
            table.add_row(key, _fmt(result.metrics[key]))
    table.add_row("saved to", result.output_dir)
    Console(stderr=True).print(table)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _signature() -> inspect.Signature:
    """run()'s parameters: --config, then one option per config key, all defaulting to "not given"."""
    return inspect.Signature([config_file_parameter()] + cli_parameters(TrainConfig))


run.__signature__ = _signature()
app.command(
    help="Train a model on an sftprep build (every TrainingArguments field is reachable via training_args)."
)(run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
