"""PEFT adapters: add LoRA to a model, or continue an existing adapter, and merge at the end."""

from __future__ import annotations

from pathlib import Path

from sfttrain.config import TrainConfig
from sfttrain.errors import SfttrainError


def apply_adapter(model, config: TrainConfig, trainable_token_ids: list[int]):
    """Wrap the model for adapter training (config.uses_adapter must be true).

    A quantized base is first prepared with peft's prepare_model_for_kbit_training. The embedding
    rows of the tokens the build added are trained too (peft trainable tokens): the base model
    never learned them, and new rows would otherwise stay as initialised.
    """
    from peft import (
        LoraConfig,
        PeftModel,
        get_peft_model,
        prepare_model_for_kbit_training,
    )

    if config.load_in_8bit or config.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if config.adapter is not None:
        if not (Path(config.adapter) / "adapter_config.json").is_file():
            raise SfttrainError(
                f"--adapter {config.adapter} has no adapter_config.json: point it at a saved PEFT adapter folder"
            )
        return PeftModel.from_pretrained(model, config.adapter, is_trainable=True)
    targets = (
        config.lora_targets
        if config.lora_targets == "all-linear"
        else [t.strip() for t in config.lora_targets.split(",") if t.strip()]
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha or 2 * config.lora_r,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        trainable_token_indices=list(trainable_token_ids) or None,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        raise SfttrainError(
            f"--lora-targets {config.lora_targets!r}: {str(e).splitlines()[0]}"
        ) from None


def merge_adapter(model):
    """The base model with the adapter's weights folded in, as a plain transformers model."""
    return model.merge_and_unload()
