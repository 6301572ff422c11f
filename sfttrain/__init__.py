"""sfttrain: fine-tune a causal LM on a build made by `sftprep build`, with transformers.Trainer.

    import sfttrain
    result = sfttrain.train({"data": "out/build", "model": "examples/tiny-llama", "output_dir": "runs/tiny",
                             "random_init": True})
    print(result.last_loss, result.metrics.get("eval_token_accuracy"))

Importing this package does not import torch; `train` does, when called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sfttrain.config import TrainConfig, load_config
from sfttrain.errors import SfttrainError

if TYPE_CHECKING:
    from sfttrain.training import TrainResult

__all__ = ["SfttrainError", "TrainConfig", "load_config", "train"]


def train(
    config: TrainConfig | Mapping[str, Any],
    callbacks=None,
    compute_metrics=None,
    optimizers=(None, None),
) -> TrainResult:
    """Train and save as `sfttrain run` does; `config` is a TrainConfig or a mapping of its keys.

    callbacks, compute_metrics and optimizers go to transformers.Trainer unchanged.
    """
    from sfttrain.training import train as run_training

    if not isinstance(config, TrainConfig):
        config = load_config(overrides=dict(config))
    return run_training(
        config, callbacks=callbacks, compute_metrics=compute_metrics, optimizers=optimizers
    )
