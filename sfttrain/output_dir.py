"""What `--output-dir` may be, and one run at a time in it: training never overwrites or deletes
what it did not write.

A run starts only in a new or empty folder (or one holding nothing but the marker of a run that
was stopped before it saved anything); a folder holding a run is continued with `--resume`, never
restarted over (the Trainer would mix its checkpoints and rotate away ones it did not write).
The folder is never the current folder, a file, the `--data` build or inside it, or the
`--model`, `--tokenizer` or `--adapter` folder (the final save would overwrite those weights).
The lock beside the folder (schemas/output_folder.py) is taken by the main process only: under
torchrun every rank runs this code, and rank 0 alone writes the folder.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from schemas.output_folder import folder_lock, path_problem
from sfttrain.config import TrainConfig
from sfttrain.errors import SfttrainError

RUN_MARKER = "sfttrain-run.json"
"""Written first into the output folder: the folder holds a run sfttrain started."""
FLAG = "--output-dir"
SHOWN_FILES = 3


def is_main_process() -> bool:
    """Global rank 0 (or no launcher): the process that writes the output folder."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def output_dir_lock(config: TrainConfig) -> Iterator[None]:
    """Check the output folder, hold its lock and mark it as this run's, for the whole run."""
    if not is_main_process():
        yield
        return
    output_dir = Path(config.output_dir)
    refuse_unsafe_output_dir(config)
    with folder_lock(output_dir, FLAG, SfttrainError):
        refuse_foreign_content(output_dir, config.resume)
        fresh = not output_dir.exists()
        output_dir.mkdir(exist_ok=True)
        if not (output_dir / RUN_MARKER).exists():
            _write_marker(output_dir, config)
        try:
            yield
        except BaseException:
            if fresh and _holds_only_marker(output_dir):
                (output_dir / RUN_MARKER).unlink()
                output_dir.rmdir()  # a run that failed before it saved anything leaves no folder
            raise


def refuse_unsafe_output_dir(config: TrainConfig) -> None:
    """A one-line SfttrainError when writing `--output-dir` would overwrite something else."""
    output_dir = Path(config.output_dir)
    if problem := path_problem(output_dir, FLAG):
        raise SfttrainError(problem)
    target = output_dir.resolve()
    for key in ("data", "model", "tokenizer", "adapter"):
        value = getattr(config, key)
        if not value or not Path(value).exists():
            continue  # unset, or a hub name
        other = Path(value).resolve()
        if other == target:
            raise SfttrainError(
                f"{FLAG} {output_dir} is the --{key} folder, which the run's save would overwrite; "
                f"give the run a folder of its own"
            )
        if key == "data" and other in target.parents:
            raise SfttrainError(
                f"{FLAG} {output_dir} lies inside the --data build; give the run a folder outside it"
            )


def refuse_foreign_content(output_dir: Path, resume: bool) -> None:
    """Refuse a folder holding files no run wrote, or a run that only --resume may continue."""
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if resume or _holds_only_marker(output_dir):
        return  # --resume checks the checkpoints themselves
    if (output_dir / RUN_MARKER).exists():
        raise SfttrainError(
            f"{FLAG} {output_dir} holds a training run; pass --resume to continue it, or choose "
            f"another {FLAG} (sfttrain never deletes or restarts a run over)"
        )
    files = sorted(p.name for p in output_dir.iterdir())
    shown = ", ".join(files[:SHOWN_FILES]) + (" ..." if len(files) > SHOWN_FILES else "")
    raise SfttrainError(
        f"{FLAG} {output_dir} holds {len(files)} entr{'y' if len(files) == 1 else 'ies'} no "
        f"sfttrain run wrote ({shown}); give a new or empty folder"
    )


def _holds_only_marker(output_dir: Path) -> bool:
    return [p.name for p in output_dir.iterdir()] == [RUN_MARKER]


def _write_marker(output_dir: Path, config: TrainConfig) -> None:
    marker = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": str(Path(config.data).resolve()),
        "model": config.model,
    }
    (output_dir / RUN_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
