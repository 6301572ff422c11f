"""`train(config)`: check the build, load the model, train with Trainer, save. Reads top to bottom
like the diagram in DESIGN.md: manifest check -> memory-mapped shards -> token-budget batches ->
padding-free collator -> model.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from schemas import MANIFEST_NAME
from sfttrain.adapters import apply_adapter, merge_adapter
from sfttrain.build_reader import Build, check_tokenizer, open_build
from sfttrain.checkpoints import SealCheckpoints, choose_checkpoint
from sfttrain.collator import collate_padding_free, reads_seq_idx
from sfttrain.config import TrainConfig, flag
from sfttrain.errors import SfttrainError
from sfttrain.isolation_probe import check_packed_isolation
from sfttrain.model_loading import (
    announce,
    causal_lm_class,
    check_vocab,
    fit_embeddings,
    load_model,
    load_tokenizer,
    read_model_config,
    resolve_attn,
    resolve_dtype,
)
from sfttrain.output_dir import output_dir_lock
from sfttrain.trainer import SfttrainTrainer, argmax_logits, token_accuracy

COPIED_MANIFEST = "sftprep_manifest.json"


@dataclass(frozen=True)
class TrainResult:
    """What a run did, for the summary table and for callers of the Python API."""

    output_dir: str
    """Where the model (or adapter), its tokenizer and sftprep_manifest.json were saved."""
    global_step: int
    """Optimizer steps taken (including those of a resumed run's earlier part)."""
    tokens: int
    """Input tokens trained on, all ranks together."""
    first_loss: float | None
    """Training loss at the first logged step."""
    last_loss: float | None
    """Training loss at the last logged step."""
    seconds: float
    """Wall time of this call's training, saving included."""
    metrics: dict = field(default_factory=dict)
    """Trainer's final train metrics and the last evaluation's (eval_loss, eval_token_accuracy)."""


@dataclass(frozen=True)
class Run:
    """A trainer ready to train, with what it was built from."""

    config: TrainConfig
    """The validated config."""
    build: Build
    """The checked, memory-mapped build."""
    trainer: SfttrainTrainer
    """The Trainer, model and data loaders set up."""
    resume_from: str | None
    """The checkpoint to resume from, when --resume."""


def train(
    config: TrainConfig, callbacks=None, compute_metrics=None, optimizers=(None, None)
) -> TrainResult:
    """Train on config.data and save to config.output_dir. Extra Trainer hooks pass straight through.

    `compute_metrics` replaces the default token accuracy and then receives full logits.
    """
    with output_dir_lock(config):
        return _train(config, callbacks, compute_metrics, optimizers)


def _train(config: TrainConfig, callbacks, compute_metrics, optimizers) -> TrainResult:
    started = time.perf_counter()
    run = prepare(
        config, callbacks=callbacks, compute_metrics=compute_metrics, optimizers=optimizers
    )
    trainer = run.trainer
    output = trainer.train(resume_from_checkpoint=run.resume_from)
    metrics = dict(output.metrics)
    if run.build.eval is not None and not _evaluated_at(
        trainer.state.log_history, trainer.state.global_step
    ):
        metrics.update(trainer.evaluate())
    else:
        metrics.update(
            {
                k: v
                for k, v in _last_eval(trainer.state.log_history).items()
                if k.startswith("eval_")
            }
        )
    save(run)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return TrainResult(
        output_dir=str(config.output_dir),
        global_step=trainer.state.global_step,
        tokens=int(trainer.state.num_input_tokens_seen),
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        seconds=time.perf_counter() - started,
        metrics=metrics,
    )


def prepare(
    config: TrainConfig, callbacks=None, compute_metrics=None, optimizers=(None, None)
) -> Run:
    """Everything before trainer.train(): checks first, so a bad build fails before a model loads."""
    from transformers import set_seed

    build = open_build(config.data, verify=config.verify)
    budget = _batch_tokens(config, build)
    resume_from = _resume_from(config) if config.resume else None

    tokenizer = load_tokenizer(config, build.manifest)
    check_tokenizer(build.manifest, tokenizer)
    dtype = resolve_dtype(config.dtype)
    if config.dtype == "bf16-pure" and not config.uses_adapter:
        announce(
            "warning: --dtype bf16-pure trains bf16 weights with no fp32 master copy: updates "
            "smaller than bf16's precision (about 1/256 of a weight) are lost; --dtype bf16 keeps one"
        )
    model_config = read_model_config(config)
    added_tokens = list(build.manifest.tokenizer.added_tokens)
    max_token_id = build.max_token_id()
    check_vocab(model_config, max_token_id, grow=bool(added_tokens))
    attn, why = resolve_attn(
        config.attn, dtype, causal_lm_class(model_config), model_config, longest_example=budget
    )
    announce(f"attention: {attn} ({why})")

    set_seed(config.seed)
    model = load_model(config, dtype, attn)
    fit_embeddings(
        model,
        tokenizer,
        max_token_id,
        grow=bool(added_tokens),
        multiple_of=config.pad_vocab_to_multiple_of
        or build.manifest.tokenizer.pad_vocab_to_multiple_of,
    )
    if config.uses_adapter:
        model = apply_adapter(
            model, config, trainable_token_ids=tokenizer.convert_tokens_to_ids(added_tokens)
        )

    seq_idx = reads_seq_idx(model)
    if seq_idx:
        announce("boundaries: each token's example index (seq_idx) goes to the model's kernels")
    trainer = SfttrainTrainer(
        model=model,
        args=training_arguments(config, dtype, has_eval=build.eval is not None),
        train_dataset=build.train,
        eval_dataset=build.eval,
        data_collator=partial(collate_padding_free, seq_idx=seq_idx),
        processing_class=tokenizer,
        callbacks=[SealCheckpoints(), *(callbacks or [])],
        compute_metrics=compute_metrics or token_accuracy,
        preprocess_logits_for_metrics=None if compute_metrics else argmax_logits,
        optimizers=optimizers,
        batch_tokens=budget,
        exact_eval=compute_metrics is None,
        neftune_alpha=config.neftune_alpha,
        loss_chunk_tokens=config.loss_chunk_tokens,
    )
    announce(f"loss: {trainer.chunked_loss_status}")
    if config.check_isolation:
        announce(f"isolation: {check_packed_isolation(trainer, config.model, max_token_id + 1)}")
    return Run(config=config, build=build, trainer=trainer, resume_from=resume_from)


def training_arguments(config: TrainConfig, dtype: torch.dtype, has_eval: bool):
    """TrainingArguments from the config: our keys first, then `training_args` for everything else."""
    from transformers import TrainingArguments

    values = dict(
        output_dir=config.output_dir,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay,
        seed=config.seed,
        gradient_accumulation_steps=config.grad_accum,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy=("steps" if config.eval_steps else "epoch") if has_eval else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps" if config.save_steps else "epoch",
        **({"save_steps": config.save_steps} if config.save_steps else {}),
        report_to=[r.strip() for r in config.report_to.split(",")]
        if config.report_to != "none"
        else "none",
        bf16=dtype
        == torch.bfloat16,  # mixed precision (autocast) in the dtype the weights were loaded in
        fp16=dtype == torch.float16,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        neftune_noise_alpha=None,  # sfttrain's own, per example (neftune.py), set on the trainer
        per_device_train_batch_size=1,  # one micro-batch = one [1, T] sequence of <= batch_tokens
        per_device_eval_batch_size=1,
        remove_unused_columns=False,  # the collator needs loss_mask and seq_lens, which the model does not take
        label_names=["labels"],
        include_num_input_tokens_seen=True,
        ddp_find_unused_parameters=False,  # every parameter takes part in every forward
    )
    values.update(config.training_args)
    try:
        return TrainingArguments(**values)
    except TypeError as e:
        raise SfttrainError(
            f"training_args: {e} (keys must be transformers.TrainingArguments fields)"
        ) from None
    except ValueError as e:
        raise SfttrainError(
            f"invalid training arguments: {str(e).splitlines()[0]} (check {flag('lr_scheduler')}, "
            f"{flag('dtype')} and the `training_args` keys)"
        ) from None


def save(run: Run) -> None:
    """The model (or adapter, or merged model), its tokenizer, and a copy of the build's manifest."""
    trainer, config = run.trainer, run.config
    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.use_cache = True  # training turned the cache off; generation wants it back
    if config.merge_adapter:
        if trainer.is_world_process_zero():
            merged = merge_adapter(model)
            merged.save_pretrained(config.output_dir)
            trainer.processing_class.save_pretrained(config.output_dir)
    else:
        trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():
        shutil.copyfile(run.build.path / MANIFEST_NAME, Path(config.output_dir) / COPIED_MANIFEST)


def _resume_from(config: TrainConfig) -> str:
    """The newest checkpoint in --output-dir that loads; the newer ones that do not are named."""
    output_dir = Path(config.output_dir)
    chosen, skipped = choose_checkpoint(output_dir, announce) if output_dir.is_dir() else (None, [])
    if chosen is None and skipped:
        raise SfttrainError(
            f"--resume: no checkpoint in --output-dir {output_dir} can be loaded: {'; '.join(skipped)}; "
            "drop --resume to start a new run"
        )
    if chosen is None:
        raise SfttrainError(
            f"--resume: no checkpoint-* folder in --output-dir {output_dir}: drop --resume to start a new run"
        )
    return chosen


def _batch_tokens(config: TrainConfig, build: Build) -> int:
    """--batch-tokens, defaulting to the train split's max_length; every row must fit it."""
    splits = build.manifest.splits
    budget = config.batch_tokens or splits["train"].max_length
    for name, rows in (("train", build.train), ("eval", build.eval)):
        if rows is not None and len(rows) and int(rows.num_tokens.max()) > budget:
            raise SfttrainError(
                f"--batch-tokens {budget} is smaller than the longest {name} row ({int(rows.num_tokens.max())} tokens; "
                f"the build's max_length is {splits[name].max_length}): set --batch-tokens to at least "
                f"{splits[name].max_length}, a multiple of it for several rows per micro-batch"
            )
    return budget


def _evaluated_at(history: list[dict], step: int) -> bool:
    return any("eval_loss" in entry and entry.get("step") == step for entry in history)


def _last_eval(history: list[dict]) -> dict:
    return next((entry for entry in reversed(history) if "eval_loss" in entry), {})
