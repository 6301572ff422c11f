"""transformers.Trainer with our batches: token-budget micro-batches of padding-free rows.

Only data loading and logging differ from Trainer; checkpointing, logging integrations, mixed
precision, NEFTune and multi-GPU (accelerate / torchrun) stay Trainer's. Loss normalisation is
Trainer's too: it counts the label tokens of all micro-batches of an optimizer step (across ranks)
and the model divides its summed loss by that count, so a step's gradient is the mean over its
tokens however they are split into micro-batches.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from sfttrain.batching import TokenBudgetBatchSampler
from sfttrain.chunked_loss import add_chunked_loss
from sfttrain.collator import IGNORE_INDEX
from sfttrain.neftune import add_packed_neftune


class SfttrainTrainer(Trainer):
    """A Trainer whose train and eval loaders batch rows by a token budget (`batch_tokens`)."""

    def __init__(
        self,
        *args,
        batch_tokens: int,
        exact_eval: bool = True,
        neftune_alpha: float | None = None,
        loss_chunk_tokens: int = 0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.batch_tokens = batch_tokens
        self.chunked_loss, self.chunked_loss_status = add_chunked_loss(
            self.model, loss_chunk_tokens, sharded=self.is_fsdp_enabled or self.is_deepspeed_enabled
        )
        """Chunked cross-entropy (chunked_loss.py), or None where it would not be exact."""
        self.neftune = add_packed_neftune(self.model, neftune_alpha) if neftune_alpha else None
        """Per-example NEFTune (neftune.py): told each micro-batch's example bounds."""
        self.exact_eval = exact_eval
        """evaluate() sums loss and accuracy over tokens (all micro-batches, all ranks); False
        with a user's compute_metrics, which gets Trainer's own evaluation loop."""
        self.train_batch_sampler: TokenBudgetBatchSampler | None = None
        self._last_log = (time.perf_counter(), 0)
        self.add_callback(_SamplerEpoch(self))
        self.add_callback(_LogLastStep())
        if not self.args.disable_tqdm:
            self.remove_callback(ProgressCallback)
            self.add_callback(TokenProgress())

    def get_train_dataloader(self) -> DataLoader:
        self.train_batch_sampler = self._sampler(self.train_dataset, shuffle=True)
        return self._loader(self.train_dataset, self.train_batch_sampler)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        return self._loader(dataset, self._sampler(dataset, shuffle=False))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Trainer's loss, after telling NEFTune where this micro-batch's examples start; a
        training loss is chunked (chunked_loss.py) where that is exact."""
        if self.neftune is not None:
            self.neftune.cu_seq_lens = inputs.get("cu_seq_lens_q")
        if self.chunked_loss is not None and model.training and not return_outputs:
            with self.chunked_loss.training_loss():
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Loss and token accuracy of the eval split, token-weighted and exact under any world
        size: each rank sums over its own micro-batches (the repeats that pad the ranks to the
        same count run, for the collectives of FSDP/DeepSpeed, but count zero), then the sums
        are all-reduced. Trainer's loop averages per-micro-batch means and counts the repeats."""
        if not self.exact_eval:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        started = time.perf_counter()
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        sampler = self._sampler(dataset, shuffle=False)
        model = self.model
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.args.device)
        with torch.no_grad():
            for batch, counted in zip(sampler.batches(), sampler.counted()):
                inputs = self._prepare_inputs(self.data_collator([dataset[i] for i in batch]))
                with self.compute_loss_context_manager():
                    logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
                if counted:
                    sums += _summed_loss_and_hits(logits, inputs["labels"])
        model.train(was_training)
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        loss, tokens, hits = sums.tolist()
        metrics = {
            f"{metric_key_prefix}_loss": loss / tokens if tokens else float("nan"),
            f"{metric_key_prefix}_token_accuracy": hits / tokens if tokens else 0.0,
            f"{metric_key_prefix}_tokens": int(tokens),
            f"{metric_key_prefix}_runtime": round(time.perf_counter() - started, 4),
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add tokens/s (all ranks, since the previous log) to training logs."""
        if "loss" in logs:
            now, seen = time.perf_counter(), self.state.num_input_tokens_seen
            then, seen_then = self._last_log
            if now > then and seen > seen_then:
                logs["tokens_per_second"] = round((seen - seen_then) / (now - then), 1)
            self._last_log = (now, seen)
        super().log(logs, start_time)

    def _sampler(self, dataset, shuffle: bool) -> TokenBudgetBatchSampler:
        return TokenBudgetBatchSampler(
            dataset.num_tokens,
            self.batch_tokens,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            rank=self.args.process_index,
            world_size=self.args.world_size,
            shuffle=shuffle,
        )

    def _loader(self, dataset, sampler: TokenBudgetBatchSampler) -> DataLoader:
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers
            and self.args.dataloader_num_workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor,
        )
        prepared = self.accelerator.prepare(loader)
        # The sampler already deals micro-batches to ranks: make accelerate's BatchSamplerShard a
        # pass-through (as Trainer does for its own rank-aware BatchRebalanceSampler).
        shard = getattr(prepared, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes, shard.process_index = 1, 0
        return prepared


class _SamplerEpoch(TrainerCallback):
    """Give the train sampler its epoch at each epoch start, resumed runs included.

    Trainer reaches the sampler itself, except under data parallelism when resuming mid-epoch:
    there the sampler sits below accelerate's BatchSamplerShard inside the SkipBatchSampler that
    skips the trained batches, and would replay epoch 0's order (test_distributed.py catches it).
    The epoch is global_step // steps_per_epoch, the formula Trainer uses to find where to resume.
    """

    def __init__(self, trainer: SfttrainTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        sampler = self.trainer.train_batch_sampler
        if sampler is not None:
            steps_per_epoch = max(-(-len(sampler) // args.gradient_accumulation_steps), 1)
            sampler.set_epoch(state.global_step // steps_per_epoch)


class _LogLastStep(TrainerCallback):
    """Log the final step too, so that a run's last logged loss is its last step's."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True


class TokenProgress(ProgressCallback):
    """Trainer's progress bar, with the last loss and tokens/s shown on the bar itself."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if (
            state.is_world_process_zero
            and self.training_bar is not None
            and logs
            and "loss" in logs
        ):
            postfix = {"loss": f"{logs['loss']:.4f}"}
            if "tokens_per_second" in logs:
                postfix["tok/s"] = f"{logs['tokens_per_second']:,.0f}"
            self.training_bar.set_postfix(postfix, refresh=False)
        super().on_log(args, state, control, logs=logs, **kwargs)


def _summed_loss_and_hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[summed cross-entropy, label tokens, correct predictions] of one micro-batch, with the
    model's shift (position t predicts t + 1), in float64."""
    predicted, target = logits[:, :-1].float(), labels[:, 1:]
    counted = target != IGNORE_INDEX
    loss = torch.nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]),
        target.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    hits = ((predicted.argmax(-1) == target) & counted).sum()
    return torch.stack([loss.double(), counted.sum().double(), hits.double()])


def argmax_logits(logits, labels):
    """preprocess_logits_for_metrics: keep only each position's predicted id, not the vocab row."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def token_accuracy(eval_prediction) -> dict[str, float]:
    """Share of label tokens predicted exactly, with the model's shift (position t predicts t + 1)."""
    predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
    predicted, target = np.asarray(predictions)[..., :-1], np.asarray(labels)[..., 1:]
    counted = target != IGNORE_INDEX
    total = int(counted.sum())
    return {"token_accuracy": float((predicted == target)[counted].sum() / total) if total else 0.0}
