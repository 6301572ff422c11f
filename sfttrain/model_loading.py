"""Load the tokenizer and the model the way training needs them.

The model comes back with `config.use_cache = False`: with a KV cache, transformers skips the
packed-sequence detection that keeps packed examples apart (DESIGN.md pitfall). sdpa becomes
sdpa per packed example (packed_sdpa.py) where that is exact. Optional GPU packages (flash-attn,
bitsandbytes) are looked up only when asked for.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from schemas.manifest import Manifest
from sfttrain import packed_sdpa
from sfttrain.config import TrainConfig
from sfttrain.errors import SfttrainError
from sfttrain.output_dir import is_main_process

GPU_EXTRA = "pip install 'sftprep[gpu]'"
DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "bf16-pure": torch.bfloat16,
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def resolve_dtype(name: str) -> torch.dtype:
    """--dtype as a torch dtype; auto is bf16 on a GPU that supports it, else fp32."""
    if name == "auto":
        return (
            torch.bfloat16
            if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            else torch.float32
        )
    return DTYPES[name]


ATTN_SUPPORT = {
    "flash_attention_2": "_supports_flash_attn",
    "sdpa": "_supports_sdpa",
    "flex_attention": "_supports_flex_attn",
}
"""The class attribute by which a transformers model says it runs an attention kernel."""

DENSE_SDPA = "sdpa-dense"
"""The --attn value for transformers' sdpa with its dense block-causal mask on every model."""
DENSE_MASK = "transformers' sdpa with a dense [T, T] block-causal mask"


def resolve_attn(
    name: str,
    dtype: torch.dtype,
    model_class=None,
    model_config=None,
    longest_example: int | None = None,
) -> tuple[str, str]:
    """--attn as a transformers attn_implementation, with the reason it was chosen. auto:
    flash_attention_2 on CUDA when flash-attn is installed and the model supports it, else sdpa
    where the model supports it (Gemma2 does not), else eager. `model_class`: the transformers
    class the model will be (None when unknown, e.g. remote code: transformers then decides).

    sdpa (asked for or chosen by auto) becomes packed_sdpa.NAME, sdpa run per packed example
    without the dense [T, T] mask, where that is exact for `model_config` with examples of up to
    `longest_example` tokens (packed_sdpa.packed_problem); elsewhere, and with --attn
    sdpa-dense, it stays transformers' sdpa with its block-causal mask."""
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if name == "flash_attention_2" and not has_flash:
        raise SfttrainError(
            f"--attn flash_attention_2 needs the flash-attn package: {GPU_EXTRA}, or use --attn sdpa"
        )
    if name == "flex_attention" and not torch.cuda.is_available():
        raise SfttrainError(
            "--attn flex_attention: torch's FlexAttention has no backward pass on CPU, so it "
            "cannot train here; use --attn sdpa or eager on CPU (flex_attention on a CUDA machine)"
        )
    if name != "auto":
        kernel = "sdpa" if name == DENSE_SDPA else name
        if not _supports(model_class, kernel):
            raise SfttrainError(
                f"--attn {name}: {model_class.__name__} does not support it in transformers; "
                "use --attn auto (it picks one the model supports) or --attn eager"
            )
        if name == DENSE_SDPA:
            return "sdpa", f"asked for with --attn {DENSE_SDPA}: {DENSE_MASK}"
        if name == "sdpa":
            return _sdpa_kind(model_config, longest_example, "asked for with --attn")
        return name, "asked for with --attn"
    flash_ok = _supports(model_class, "flash_attention_2")
    if (
        has_flash
        and flash_ok
        and torch.cuda.is_available()
        and dtype in (torch.bfloat16, torch.float16)
    ):
        return "flash_attention_2", "auto: flash-attn is installed and CUDA is available"
    why = (
        "flash-attn not installed"
        if not has_flash
        else "the model does not support flash-attn"
        if not flash_ok
        else "flash-attn needs CUDA and bf16/fp16"
    )
    if _supports(model_class, "sdpa"):
        return _sdpa_kind(model_config, longest_example, f"auto: {why}")
    return "eager", f"auto: {why}, and {model_class.__name__} does not support sdpa"


def _sdpa_kind(model_config, longest_example: int | None, why: str) -> tuple[str, str]:
    """sdpa per packed example where that is exact, else transformers' sdpa; with the reason."""
    problem = (
        "the model's config is unknown"
        if model_config is None
        else packed_sdpa.packed_problem(model_config, longest_example)
    )
    if problem is not None:
        return "sdpa", f"{why}; {DENSE_MASK}: {problem}"
    return packed_sdpa.NAME, f"{why}; sdpa on each packed example, no [T, T] mask"


def _supports(model_class, attn: str) -> bool:
    """Whether the model class runs this kernel (True when the class is unknown or for eager)."""
    flag = ATTN_SUPPORT.get(attn)
    return model_class is None or flag is None or bool(getattr(model_class, flag, True))


def read_model_config(config: TrainConfig):
    """The model's transformers config (config.json only, no weights), read before anything
    heavy so that a wrong model fails in one line before it loads."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(config.model, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as e:
        raise SfttrainError(
            f"could not load --model {config.model} (its config.json): "
            f"{str(e).splitlines()[0].rstrip('.')}; it must be a folder with config.json, or a cached hub name"
        ) from None


def causal_lm_class(model_config):
    """The transformers class AutoModelForCausalLM would build for this config (None if unknown)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(model_config)]
    except (KeyError, ValueError):
        return None


def check_vocab(model_config, max_token_id: int, grow: bool) -> None:
    """Before the model loads: every id of the build must be a row of its embeddings (config.json's
    vocab_size), unless the build added tokens (the embeddings then grow: fit_embeddings)."""
    rows = getattr(model_config, "vocab_size", None)
    if rows is None:
        rows = getattr(getattr(model_config, "get_text_config", lambda: None)(), "vocab_size", None)
    if not grow and isinstance(rows, int) and max_token_id >= rows:
        raise SfttrainError(_wrong_vocab(max_token_id, rows))


def _wrong_vocab(max_token_id: int, rows: int) -> str:
    return (
        f"the build has token id {max_token_id} but the model's embeddings have only {rows} rows "
        f"(ids 0..{rows - 1}) and the build added no tokens: the data was tokenized for another model. "
        "Rebuild it with this model's tokenizer (`sftprep build --tokenizer MODEL`) or pass the matching --model"
    )


def tokenizer_source(config: TrainConfig, manifest: Manifest) -> str:
    """--tokenizer, else the model folder when it holds a tokenizer, else the build's tokenizer."""
    if config.tokenizer is not None:
        return config.tokenizer
    model_dir = Path(config.model)
    if model_dir.is_dir():
        if any((model_dir / f).is_file() for f in TOKENIZER_FILES):
            return config.model
        return manifest.tokenizer.name_or_path
    return config.model  # a hub name: its cached tokenizer, with a fallback in load_tokenizer


def load_tokenizer(config: TrainConfig, manifest: Manifest):
    """The tokenizer to check against the build and to save beside the model."""
    from transformers import AutoTokenizer

    source = tokenizer_source(config, manifest)
    candidates = (
        [source]
        if config.tokenizer is not None or source != config.model
        else [source, manifest.tokenizer.name_or_path]
    )
    errors = []
    for candidate in dict.fromkeys(candidates):
        try:
            return AutoTokenizer.from_pretrained(
                candidate, trust_remote_code=config.trust_remote_code
            )
        except (OSError, ValueError) as e:
            errors.append(f"{candidate}: {str(e).splitlines()[0]}")
    raise SfttrainError(
        f"could not load a tokenizer ({'; '.join(errors)}): pass one with --tokenizer PATH"
    )


def load_model(config: TrainConfig, dtype: torch.dtype, attn: str):
    """The causal LM, from pretrained weights or (--random-init) from its config, with use_cache off."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM

    if attn == packed_sdpa.NAME:
        packed_sdpa.register()
    kwargs = {
        "dtype": _weights_dtype(config, dtype),
        "attn_implementation": attn,
        "trust_remote_code": config.trust_remote_code,
    }
    quantization = _quantization_config(config, dtype)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    kwargs.update(config.model_kwargs)
    try:
        if config.random_init:
            model_config = AutoConfig.from_pretrained(
                config.model, trust_remote_code=config.trust_remote_code
            )
            model = AutoModelForCausalLM.from_config(model_config, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:
        # OSError: missing files; ValueError: a config.json with no known model_type;
        # SafetensorError: weights cut short or not safetensors at all.
        hint = (
            "a folder with config.json"
            if config.random_init
            else "a folder with config.json and weights, or a cached hub name (add --random-init to start from random weights)"
        )
        raise SfttrainError(
            f"could not load --model {config.model}: {str(e).splitlines()[0].rstrip('.')}; it must be {hint}"
        ) from None
    model.config.use_cache = False
    return model


def fit_embeddings(
    model, tokenizer, max_token_id: int, grow: bool, multiple_of: int | None
) -> None:
    """Make every id of the build a row of the model's embeddings.

    When the build added tokens (`grow`: ChatML and the like), the embeddings grow to the
    tokenizer's length, rounded up to `multiple_of`. Otherwise an id past the last row is an
    error: the data was made with another tokenizer.
    """
    if grow and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=multiple_of)
    rows = model.get_input_embeddings().weight.shape[0]
    if max_token_id >= rows:
        raise SfttrainError(_wrong_vocab(max_token_id, rows))


def announce(line: str) -> None:
    """Print one status line on the main process only."""
    if is_main_process():
        print(line, file=sys.stderr, flush=True)


def _weights_dtype(config: TrainConfig, dtype: torch.dtype) -> torch.dtype:
    """Full fine-tuning in bf16/fp16 keeps fp32 master weights (autocast computes in the half
    dtype): in bf16 weights an AdamW step at lr 2e-5 leaves most weights unchanged, and GradScaler
    refuses fp16 ones. Adapters (the base is frozen) and --dtype bf16-pure load in `dtype`."""
    if config.uses_adapter or config.dtype == "bf16-pure":
        return dtype
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _quantization_config(config: TrainConfig, dtype: torch.dtype):
    """A BitsAndBytesConfig for --load-in-8bit / --load-in-4bit (NF4, double quantization)."""
    if not (config.load_in_8bit or config.load_in_4bit):
        return None
    which = "--load-in-4bit" if config.load_in_4bit else "--load-in-8bit"
    if importlib.util.find_spec("bitsandbytes") is None:
        raise SfttrainError(f"{which} needs the bitsandbytes package: {GPU_EXTRA}")
    from transformers import BitsAndBytesConfig

    if config.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
