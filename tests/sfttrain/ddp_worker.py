"""Run by test_distributed.py under `torchrun --nproc_per_node 2`: train, stop, resume, record.

Each rank writes rank{RANK}.json with the example ids of every micro-batch it trained, for an
uninterrupted run ("whole"), a run stopped after STOP_AT steps ("first") and its resumption
("rest").
"""

import json
import os
import sys
from pathlib import Path

from transformers import TrainerCallback

from schemas import EXAMPLE_IDS
from sfttrain.cli import exit_if_distributed
from sfttrain.config import load_config
from sfttrain.training import prepare

STOP_AT = 3  # optimizer steps: half way through the second epoch


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def recorded(overrides, stop_at=None):
    run = prepare(load_config(overrides=overrides), callbacks=[StopAt(stop_at)])
    seen, collate = [], run.trainer.data_collator

    def recording(rows):
        seen.append(sorted(int(i) for r in rows for i in r[EXAMPLE_IDS]))
        return collate(rows)

    run.trainer.data_collator = recording
    run.trainer.train(resume_from_checkpoint=run.resume_from)
    return seen


def evaluated(config_path: str, out_dir: str) -> None:
    """Evaluate the untrained model (the same seeded weights on every rank): rank{RANK}.json."""
    run = prepare(load_config(overrides=json.loads(Path(config_path).read_text())))
    metrics = run.trainer.evaluate()
    (Path(out_dir) / f"rank{os.environ['RANK']}.json").write_text(json.dumps(metrics))
    exit_if_distributed(0)


def main(config_path: str, out_dir: str, mode: str = "train") -> None:
    if mode == "eval":
        return evaluated(config_path, out_dir)
    common = json.loads(Path(config_path).read_text())
    result = {
        "world_size": int(os.environ["WORLD_SIZE"]),
        "whole": recorded({**common, "output_dir": str(Path(out_dir) / "whole")}),
        "first": recorded({**common, "output_dir": str(Path(out_dir) / "part")}, stop_at=STOP_AT),
        "rest": recorded({**common, "output_dir": str(Path(out_dir) / "part"), "resume": True}),
    }
    (Path(out_dir) / f"rank{os.environ['RANK']}.json").write_text(json.dumps(result))
    exit_if_distributed(
        0
    )  # as the CLI ends: a gloo group left to shutdown can abort or hang the exit


if __name__ == "__main__":
    main(*sys.argv[1:])
