"""The training config: one frozen dataclass that YAML files and CLI flags both fill in.

Every field is a config key of the same name, and a CLI flag with dashes (`learning_rate` is
`--learning-rate`); flags override the file. Validation happens here, at the edge, and reports
every problem at once with the key/flag to change. This module imports neither torch nor
transformers, so `sfttrain --help` and config errors are instant.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from schemas.config_fields import check_types, construct, flag, read_yaml, unknown_keys
from schemas.config_fields import field_docs as _field_docs
from sfttrain.errors import ConfigError

AttnChoice = Literal["auto", "flash_attention_2", "sdpa", "sdpa-dense", "flex_attention", "eager"]
"""The --attn values: transformers' kernel names, and sdpa-dense (sdpa with its dense mask)."""

# TrainingArguments fields that sfttrain sets itself: `training_args` may not set them.
# Each maps to the config key to use instead (None: fixed by how sfttrain batches data).
OWNED_TRAINING_ARGS: dict[str, str | None] = {
    "output_dir": "output_dir",
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "learning_rate": "learning_rate",
    "warmup_steps": "warmup_ratio",
    "lr_scheduler_type": "lr_scheduler",
    "weight_decay": "weight_decay",
    "seed": "seed",
    "gradient_accumulation_steps": "grad_accum",
    "logging_steps": "logging_steps",
    "eval_steps": "eval_steps",
    "save_steps": "save_steps",
    "report_to": "report_to",
    "bf16": "dtype",
    "fp16": "dtype",
    "gradient_checkpointing": "gradient_checkpointing",
    "activation_checkpointing": "gradient_checkpointing",
    "neftune_noise_alpha": "neftune_alpha",
    "per_device_train_batch_size": "batch_tokens",
    "per_device_eval_batch_size": "batch_tokens",
    "remove_unused_columns": None,
    "label_names": None,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything `sfttrain run` needs. Defaults live here and nowhere else."""

    # --- what to train on, what to train, where to write ---
    data: str | None = None
    """Build folder written by `sftprep build` (holds manifest.json, train/, eval/)."""
    model: str | None = None
    """Model to fine-tune: a local folder or a hub name already in the local cache."""
    output_dir: str | None = None
    """Where checkpoints and the final model (or adapter) go: a new or empty folder, or a run's
    folder with --resume (never the build, the model or the current folder)."""
    tokenizer: str | None = None
    """Tokenizer folder; default: the model's own if it has one, else the build's tokenizer."""

    # --- model loading ---
    random_init: bool = False
    """Build the model from `model`'s config.json with random weights (quickstart, benchmarks)."""
    dtype: Literal["auto", "bf16", "fp16", "fp32", "bf16-pure"] = "auto"
    """Compute dtype: bf16 or fp16 (autocast; full fine-tuning keeps fp32 master weights, adapters
    keep the frozen base in that dtype), fp32, bf16-pure (bf16 weights and optimizer state: half
    the memory, but updates below bf16's precision are lost; warned), or auto (bf16 on a
    bf16-capable GPU, else fp32)."""
    attn: AttnChoice = "auto"
    """Attention kernel: auto (flash_attention_2 if flash-attn is installed and CUDA is there, else sdpa where the architecture supports it, else eager; the choice is printed), flash_attention_2, sdpa (on Llama, Mistral, Qwen2/3, Phi3, SmolLM3, OLMo2 with no sliding window shorter than batch_tokens: run on each packed example, no tokens x tokens mask; elsewhere transformers' dense block-causal mask; printed), sdpa-dense (always that dense mask), flex_attention or eager."""
    model_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments for from_pretrained (applied last, so they override the above)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    trust_remote_code: bool = False
    """Allow model code from the model folder or hub repo to run."""
    pad_vocab_to_multiple_of: int | None = None
    """When the build added tokens, resize embeddings to a multiple of this; default: the manifest's value."""

    # --- data ---
    batch_tokens: int | None = None
    """Token budget of one micro-batch per device; default: the build's train max_length (one packed row)."""
    verify: bool = False
    """Also check every shard's sha256 against the manifest (sizes are always checked)."""

    # --- optimisation (the common TrainingArguments, under shorter names) ---
    learning_rate: float = 2e-5
    """Peak learning rate."""
    epochs: float = 1.0
    """Passes over the train split (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps; overrides epochs."""
    warmup_ratio: float = 0.0
    """Fraction of the optimizer steps spent warming the learning rate up, in [0, 1)."""
    lr_scheduler: str = "linear"
    """Learning-rate schedule (a transformers SchedulerType: linear, cosine, constant, ...)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    seed: int = 42
    """Seed for model init, batch order (with the epoch) and dropout."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (each of at most batch_tokens tokens per device)."""
    check_isolation: bool = True
    """Before training, refuse a model whose layers let one packed example change the next one's logits (recurrent / linear-attention layers without a kernel that restarts per example): two 32-token forwards."""
    loss_chunk_tokens: int = 2048
    """Training cross-entropy in chunks of this many tokens, so the full tokens x vocab logits never exist (exact; on for Llama, Mistral, Qwen2/3, Phi3, SmolLM3, OLMo2, off elsewhere and under FSDP/DeepSpeed); 0 turns it off."""
    neftune_alpha: float | None = None
    """NEFTune noise alpha for the embeddings, scaled per packed example (alpha/sqrt(L·d), L its length); unset turns it off."""

    # --- logging, evaluation, checkpoints ---
    logging_steps: int = 10
    """Log loss, learning rate and tokens/s every this many optimizer steps."""
    eval_steps: int | None = None
    """Evaluate on the build's eval split every this many steps; None: at the end of each epoch."""
    save_steps: int | None = None
    """Save a checkpoint every this many steps; None: at the end of each epoch."""
    report_to: str = "none"
    """Logging integrations, comma separated (tensorboard, wandb, ...), or none."""
    resume: bool = False
    """Continue from the last checkpoint in output_dir, with the same data order."""

    # --- adapters and quantization ---
    lora_r: int = 0
    """LoRA rank; 0 trains all weights (full fine-tuning)."""
    lora_alpha: int | None = None
    """LoRA alpha; default: 2 * lora_r."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_targets: str = "all-linear"
    """Modules that get LoRA: all-linear, or comma-separated module names (q_proj,v_proj)."""
    adapter: str | None = None
    """Existing PEFT adapter folder to continue training (its own config sets rank and targets)."""
    load_in_8bit: bool = False
    """Load the base model in 8 bits with bitsandbytes (needs LoRA)."""
    load_in_4bit: bool = False
    """Load the base model in 4-bit NF4 with double quantization (QLoRA; needs LoRA)."""
    merge_adapter: bool = False
    """At the end, merge the adapter into the base weights and save the merged model."""

    # --- anything else ---
    training_args: dict = field(default_factory=dict)
    """Any other transformers.TrainingArguments field, e.g. {save_total_limit: 2, optim: adamw_torch_fused}."""

    def __post_init__(self):
        check_types(self, ConfigError)

    def value_problems(self, mistyped: frozenset = frozenset()) -> list[str]:
        """See the module-level value_problems."""
        return value_problems(self, mistyped)

    @property
    def uses_adapter(self) -> bool:
        """True when training a PEFT adapter (new LoRA or a continued one) instead of all weights."""
        return self.lora_r > 0 or self.adapter is not None


def field_names() -> list[str]:
    """Config keys in declaration order."""
    return [f.name for f in dataclasses.fields(TrainConfig)]


def field_docs() -> dict[str, str]:
    """Each config key's docstring (the --help text of its flag)."""
    return _field_docs(TrainConfig)


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Read a YAML config (optional), apply overrides (CLI flags that were given), validate;
    every problem (unknown keys, types, values) is reported at once in one ConfigError."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    known = field_names()
    hint = " (TrainingArguments fields go under `training_args:`)"
    if path is not None:
        loaded = read_yaml(path, ConfigError)
        problems += unknown_keys(loaded, known, f"--config {path}", hint)
        values.update(_resolve_paths(loaded, Path(path).parent))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    problems += unknown_keys(given, known, "train config", hint)
    values.update(given)
    return construct(
        TrainConfig, {k: v for k, v in values.items() if k in known}, problems, ConfigError
    )


def value_problems(config: TrainConfig, mistyped: frozenset = frozenset()) -> list[str]:  # noqa: C901, PLR0912 - a flat list of checks
    """Values out of range, missing or conflicting (types are already checked). Keys in
    `mistyped` had a value of the wrong type, already reported: they are not called missing."""
    c = config
    required = ("data", "model", "output_dir")
    problems = [
        f"{flag(k)} (config key `{k}`) is required"
        for k in required
        if getattr(c, k) is None and k not in mistyped
    ]
    for name in (
        "batch_tokens",
        "grad_accum",
        "max_steps",
        "logging_steps",
        "eval_steps",
        "save_steps",
        "pad_vocab_to_multiple_of",
        "lora_alpha",
    ):
        value = getattr(c, name)
        if value is not None and value < 1:
            problems.append(f"{flag(name)} must be at least 1, got {value}")
    if c.loss_chunk_tokens < 0:
        problems.append(
            f"--loss-chunk-tokens must be 0 (off) or positive, got {c.loss_chunk_tokens}"
        )
    if c.epochs <= 0:
        problems.append(f"--epochs must be positive, got {c.epochs}")
    if c.learning_rate < 0:
        problems.append(f"--learning-rate must not be negative, got {c.learning_rate}")
    if not 0 <= c.warmup_ratio < 1:
        problems.append(f"--warmup-ratio must be in [0, 1), got {c.warmup_ratio}")
    if c.lora_r < 0:
        problems.append(f"--lora-r must be 0 (full fine-tuning) or positive, got {c.lora_r}")
    if not 0 <= c.lora_dropout < 1:
        problems.append(f"--lora-dropout must be in [0, 1), got {c.lora_dropout}")
    if c.adapter is not None and c.lora_r > 0:
        problems.append(
            "--adapter continues an adapter with its own rank and targets: drop --lora-r (and other --lora-* flags)"
        )
    if c.load_in_8bit and c.load_in_4bit:
        problems.append("--load-in-8bit and --load-in-4bit exclude each other: pick one")
    quantized = c.load_in_8bit or c.load_in_4bit
    if quantized and not c.uses_adapter:
        problems.append(
            "a quantized base model cannot be fully fine-tuned: add --lora-r (e.g. --lora-r 16) or --adapter PATH"
        )
    if quantized and c.random_init:
        problems.append("--random-init cannot be combined with --load-in-8bit/--load-in-4bit")
    if c.merge_adapter and not c.uses_adapter:
        problems.append(
            "--merge-adapter needs an adapter: add --lora-r or --adapter, or drop --merge-adapter"
        )
    if c.merge_adapter and quantized:
        problems.append(
            "--merge-adapter cannot merge into a quantized base: drop --merge-adapter and merge later in bf16"
        )
    for key in sorted(c.training_args):
        if key in OWNED_TRAINING_ARGS:
            own = OWNED_TRAINING_ARGS[key]
            hint = f"use {flag(own)} (config key `{own}`)" if own else "sfttrain sets it itself"
            problems.append(f"training_args.{key} cannot be set there: {hint}")
    return problems


def _resolve_paths(loaded: dict[str, Any], base: Path) -> dict[str, Any]:
    """Paths in a config file are relative to the file (as in sftprep's build.yaml).

    model and tokenizer may also be hub names: they are resolved only when the file exists.
    """
    out = dict(loaded)
    for key in ("data", "output_dir", "adapter", "model", "tokenizer"):
        value = out.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            candidate = os.path.normpath(base / value)
            if key not in ("model", "tokenizer") or Path(candidate).exists():
                out[key] = candidate
    return out
