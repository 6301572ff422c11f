"""Training speed of sfttrain against TRL's SFTTrainer, and a few QLoRA / bf16 steps.

    python bench/train_speed.py            # GPU: random-init SmolLM2-360M shape, bf16
    python bench/train_speed.py --tiny     # CPU: tiny model, few examples (checks the script runs)

(a) checks: a few sfttrain steps in bf16 (full fine-tuning) and in QLoRA (4-bit NF4 base + LoRA),
    with loss and peak GPU memory; QLoRA is skipped, with the reason, without bitsandbytes or CUDA.
(b) speed: one epoch over the same synthetic chat data, same model init, same token budget per
    micro-batch, for sfttrain (packed rows of the build, padding-free; flash-attn varlen when
    installed, and sdpa packed), TRL padded (batch size = budget / mean example length, so the same
    real tokens per step on average) and TRL with BFD packing (padding-free). Tokens/s counts real
    tokens only; MFU is model FLOPs (see training_flops) / the card's dense bf16 peak; ratios are
    sfttrain's best kernel / TRL. Peak GPU memory per run.

Every run is recorded in results.json as it ends (a run that raises is recorded as its error and
the others still run; TRL runs are "skipped" without trl/datasets); exit code 1 if any run failed.

The data is generated (seeded), built with `sftprep build`, and handed to TRL already tokenized
(the build's own examples: same ids, same loss masks), so only the training loop differs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TOKENIZER = REPO / "examples" / "smollm2-tokenizer"
SMOLLM2_360M = {
    "vocab_size": 49152, "hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
    "num_attention_heads": 15, "num_key_value_heads": 5, "head_dim": 64, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny model and data: runs on CPU in seconds"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="working folder (default: a temporary one)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results JSON, updated after every run (default: OUT/results.json; kept parts of an earlier call stay)",
    )
    parser.add_argument(
        "--examples", type=int, default=None, help="synthetic chat examples (default 3000, tiny 24)"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="build max_length = batch tokens (default 2048, tiny 128)",
    )
    parser.add_argument(
        "--check-steps",
        type=int,
        default=None,
        help="steps of the bf16 and QLoRA checks (default 10, tiny 1)",
    )
    parser.add_argument(
        "--skip-checks", action="store_true", help="skip (a), the bf16 and QLoRA steps"
    )
    parser.add_argument(
        "--skip-speed", action="store_true", help="skip (b), the comparison with TRL"
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="train_speed-"))
    examples = args.examples or (24 if args.tiny else 3000)
    max_length = args.max_length or (128 if args.tiny else 2048)
    check_steps = args.check_steps or (1 if args.tiny else 10)

    import torch

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"device: {device}; torch {torch.__version__}; out: {out}", flush=True)
    results = Results(args.results or out / "results.json")
    results.update(device=device, tiny=args.tiny, examples=examples, max_length=max_length)
    model_dir = write_model_config(out / "model", args.tiny)
    build_dir = make_build(out, examples, max_length, args.tiny)
    if not args.skip_checks:
        run_checks(results, out, model_dir, build_dir, check_steps, cuda)
    if not args.skip_speed:
        run_speed(results, out, model_dir, build_dir, max_length, cuda, device)
    print(json.dumps(results.data, indent=2))
    sys.exit(1 if results.failed else 0)


class Results:
    """results.json, rewritten after every run so that a crash later loses nothing before it;
    an existing file's parts are kept (gpu_check.sh runs the checks and the speed part apart)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}
        self.failed = False

    def update(self, **values) -> None:
        self.data.update(values)
        self._write()

    def record(self, part: str, name: str, value: dict) -> None:
        self.data.setdefault(part, {})[name] = value
        self.failed = self.failed or "error" in value
        print(f"{part} {name}: {value}", flush=True)
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2))


def attempt(run, *args, **kwargs) -> dict:
    """run(...)'s result, or {"error": "Type: message"} (first line) if it raised."""
    try:
        return run(*args, **kwargs)
    except Exception as err:  # one run failing must not stop the others
        first = (str(err).splitlines() or [""])[0]
        return {"error": f"{type(err).__name__}: {first}"[:500]}


def write_model_config(folder: Path, tiny: bool) -> Path:
    """config.json of a random-init Llama: the tiny example model, or the SmolLM2-360M shape."""
    from transformers import LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    if tiny:
        config = json.loads((REPO / "examples" / "tiny-llama" / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config))
    else:
        LlamaConfig(**SMOLLM2_360M).save_pretrained(folder)
    return folder


def make_build(out: Path, count: int, max_length: int, tiny: bool) -> Path:
    """Seeded synthetic chats (log-normal lengths) built with sftprep (BFD packing)."""
    import sftprep

    rng = np.random.default_rng(0)
    words = [
        "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9)))
        for _ in range(3000)
    ]
    median_words = 10 if tiny else 120

    def text(scale: float) -> str:
        n = int(np.clip(rng.lognormal(math.log(median_words * scale), 0.8), 3, max_length // 3))
        return " ".join(rng.choice(words, n))

    source = out / "chats.jsonl"
    with source.open("w") as f:
        for _ in range(count):
            messages = [
                {"role": "user", "content": text(0.5)},
                {"role": "assistant", "content": text(1.0)},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    build_dir = out / "build"
    sftprep.build(
        {
            "sources": [str(source)],
            "tokenizer": str(TOKENIZER),
            "out": str(build_dir),
            "max_length": max_length,
            "packing": "bfd",
        }
    )
    return build_dir


def sfttrain_config(
    out: Path, model_dir: Path, build_dir: Path, name: str, cuda: bool, **extra
) -> dict:
    return {
        "data": str(build_dir), "model": str(model_dir), "output_dir": str(out / name), "random_init": True,
        "dtype": "bf16" if cuda else "fp32", "learning_rate": 1e-4, "logging_steps": 10**6, "seed": 0,
        "training_args": {"save_strategy": "no", "disable_tqdm": True, "use_cpu": not cuda}, **extra,
    }  # fmt: skip


def run_checks(
    results: Results, out: Path, model_dir: Path, build_dir: Path, steps: int, cuda: bool
) -> None:
    """(a) a few bf16 full fine-tuning steps and a few QLoRA steps, with loss and peak memory."""
    runs = {
        "bf16": {"dtype": "bf16"},
        "qlora": {
            "dtype": "bf16",
            "lora_r": 16,
            "load_in_4bit": True,
            "gradient_checkpointing": True,
        },
    }
    for name, extra in runs.items():
        if name == "qlora" and not (cuda and importlib.util.find_spec("bitsandbytes")):
            results.record(
                "checks",
                name,
                {"skipped": "needs CUDA and bitsandbytes (bash bench/gpu_wheels.sh carries it)"},
            )
            continue
        config = sfttrain_config(
            out, model_dir, build_dir, f"check-{name}", cuda, max_steps=steps, **extra
        )
        config["logging_steps"] = 1
        results.record("checks", name, attempt(_check, config, cuda))


def _check(config: dict, cuda: bool) -> dict:
    import sfttrain

    _reset_peak(cuda)
    result = sfttrain.train(config)
    return {
        "steps": result.global_step, "first_loss": result.first_loss, "last_loss": result.last_loss,
        "finite": bool(np.isfinite(result.last_loss)),
        "tokens_per_second": round(result.tokens / result.metrics["train_runtime"], 1),
        "peak_gpu_memory_gib": _peak(cuda),
    }  # fmt: skip


def run_speed(
    results: Results,
    out: Path,
    model_dir: Path,
    build_dir: Path,
    budget: int,
    cuda: bool,
    device: str,
) -> None:
    """(b) tokens/s and MFU over one epoch: sfttrain (flash-attn varlen, sdpa packed), TRL padded,
    TRL BFD padding-free; each run recorded as it ends, ratios once all have run."""
    examples = build_examples(build_dir)
    lengths = [len(e["input_ids"]) for e in examples]
    flops = training_flops(model_dir, lengths)
    peak = peak_flops(device)
    results.update(
        speed_setup={
            "real_tokens": sum(lengths), "examples": len(examples), "batch_tokens": budget,
            "model_tflops_per_epoch": round(flops / 1e12, 3), "peak_tflops": peak and peak / 1e12,
        }
    )  # fmt: skip

    def timed(run, *args, **kwargs) -> dict:
        value = attempt(run, *args, **kwargs)
        if "seconds" in value:
            value["mfu"] = round(flops / value["seconds"] / peak, 4) if peak else None
        return value

    flash = cuda and importlib.util.find_spec("flash_attn") is not None
    for attn in ("flash_attention_2", "sdpa"):
        name = f"sfttrain_{'flash' if attn == 'flash_attention_2' else 'sdpa'}"
        if attn == "flash_attention_2" and not flash:
            results.record("speed", name, {"skipped": "needs CUDA and flash-attn"})
            continue
        value = timed(_sfttrain_epoch, out, model_dir, build_dir, budget, cuda, attn, sum(lengths))
        results.record("speed", name, value)
    missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
    mean_length = sum(lengths) / len(examples)
    batch_size = max(1, round(budget / mean_length))
    for name, packing, size in (("trl_padded", False, batch_size), ("trl_bfd", True, 1)):
        if missing:
            value = {
                "skipped": f"needs {' and '.join(missing)} (bash bench/gpu_wheels.sh carries them)"
            }
        else:
            value = timed(run_trl, out, model_dir, examples, budget, cuda, packing, size)
            value["batch_size"] = size
        results.record("speed", name, value)
    speed = results.data["speed"]
    ours = next(
        (
            speed[n]
            for n in ("sfttrain_flash", "sfttrain_sdpa")
            if "tokens_per_second" in speed.get(n, {})
        ),
        None,
    )
    ratios = {}
    for name in ("trl_padded", "trl_bfd"):
        if ours and "tokens_per_second" in speed[name]:
            ratios[f"sfttrain_vs_{name}"] = round(
                ours["tokens_per_second"] / speed[name]["tokens_per_second"], 3
            )
    results.update(speed_ratios=ratios)
    print(f"tokens/s ratios (sfttrain's best kernel / TRL): {ratios}", flush=True)


def _sfttrain_epoch(
    out: Path, model_dir: Path, build_dir: Path, budget: int, cuda: bool, attn: str, real: int
) -> dict:
    import sfttrain

    _reset_peak(cuda)
    config = sfttrain_config(
        out, model_dir, build_dir, f"speed-sfttrain-{attn}", cuda, epochs=1, batch_tokens=budget
    )
    result = sfttrain.train({**config, "attn": attn})
    assert result.tokens == real, (result.tokens, real)
    return {**_rate(real, result.metrics["train_runtime"]), "peak_gpu_memory_gib": _peak(cuda)}


def training_flops(model_dir: Path, lengths: list[int]) -> float:
    """Model FLOPs of one epoch (forward + backward = 3x forward): 6 x the matmul parameters
    (every linear layer and the LM head, not the input embedding) per token, plus causal
    attention per example, 6 x layers x (heads x head_dim) x L(L+1) (QK^T and AV, half the square).
    Padding is not counted, so TRL padded's MFU is its useful work, like ours."""
    config = json.loads((model_dir / "config.json").read_text())
    d, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads, kv = (
        config["num_attention_heads"],
        config.get("num_key_value_heads") or config["num_attention_heads"],
    )
    head_dim = config.get("head_dim") or d // heads
    per_layer = (
        d * heads * head_dim * 2 + d * kv * head_dim * 2 + 3 * d * config["intermediate_size"]
    )
    matmul = layers * per_layer + d * vocab
    tokens = sum(lengths)
    attention = 6 * layers * heads * head_dim * sum(n * (n + 1) for n in lengths)
    return 6 * matmul * tokens + attention


def peak_flops(device: str) -> float | None:
    """Dense bf16 peak of the card (the vendor's figure), None where unknown (CPU included)."""
    for name, tflops in (("H200", 989.4), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.1)):
        if name in device:
            return tflops * 1e12
    return None


def _reset_peak(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()


def _peak(cuda: bool) -> float | None:
    if not cuda:
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def build_examples(build_dir: Path) -> list[dict]:
    """The build's examples, unpacked from its rows: input_ids and labels (-100 off the loss mask)."""
    from schemas import INPUT_IDS, LOSS_MASK, SEQ_LENS
    from sfttrain.build_reader import open_build

    rows = open_build(build_dir).train
    examples = []
    for i in range(len(rows)):
        row = rows[i]
        for start, end in zip(np.cumsum([0, *row[SEQ_LENS][:-1]]), np.cumsum(row[SEQ_LENS])):
            ids = row[INPUT_IDS][start:end].astype(np.int64)
            labels = np.where(row[LOSS_MASK][start:end] == 1, ids, -100)
            examples.append({"input_ids": ids.tolist(), "labels": labels.tolist()})
    return examples


def run_trl(
    out: Path,
    model_dir: Path,
    examples: list[dict],
    budget: int,
    cuda: bool,
    packing: bool,
    batch_size: int,
) -> dict:
    """One epoch of TRL's SFTTrainer on the pre-tokenized examples; real tokens per second."""
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    dtype = torch.bfloat16 if cuda else torch.float32
    attn = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"
    set_seed(0)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.from_pretrained(model_dir), dtype=dtype, attn_implementation=attn
    )
    name = "trl-bfd" if packing else "trl-padded"
    config = SFTConfig(
        output_dir=str(out / name), num_train_epochs=1, per_device_train_batch_size=batch_size, learning_rate=1e-4,
        max_length=budget, packing=packing, packing_strategy="bfd", bf16=cuda, gradient_checkpointing=False,
        save_strategy="no", logging_steps=10**6, report_to="none", disable_tqdm=True, seed=0, use_cpu=not cuda,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(examples),
        processing_class=AutoTokenizer.from_pretrained(TOKENIZER),
    )
    _reset_peak(cuda)
    started = time.perf_counter()
    metrics = trainer.train().metrics
    wall = time.perf_counter() - started
    real = sum(len(e["input_ids"]) for e in examples)
    return {
        **_rate(real, metrics["train_runtime"]), "attn": attn, "wall_s": round(wall, 2),
        "peak_gpu_memory_gib": _peak(cuda),
    }  # fmt: skip


def _rate(tokens: int, seconds: float) -> dict:
    return {"seconds": round(seconds, 2), "tokens_per_second": round(tokens / seconds, 1)}


if __name__ == "__main__":
    main()
