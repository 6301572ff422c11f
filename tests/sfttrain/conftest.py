"""Fixtures for sfttrain tests: small builds written by hand, tiny random models, no network.

`write_build` writes what `sftprep build` writes (Arrow IPC stream shards with schemas.row_schema()
and a manifest that validates against schemas/manifest.schema.json), so the trainer can be tested
without depending on sftprep.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from schemas import (
    EXAMPLE_IDS,
    FORMAT_VERSION,
    INPUT_IDS,
    LOSS_MASK,
    MANIFEST_NAME,
    NUM_LOSS_TOKENS,
    NUM_TOKENS,
    SEQ_LENS,
    row_schema,
    shard_name,
    tokenizer_fingerprint,
)

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "examples" / "smollm2-tokenizer"
TINY_LLAMA_DIR = REPO / "examples" / "tiny-llama"
SMALL_VOCAB = 512

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def example(ids, mask=None):
    """One example: its ids and loss mask (default: 0 on the first token, 1 on the others)."""
    ids = list(ids)
    return ids, list(mask) if mask is not None else [0] + [1] * (len(ids) - 1)


def pack(*examples, first_id: int = 0) -> dict:
    """One row of the shard contract packing these examples (each a list of ids or an (ids, mask) pair)."""
    pairs = [e if isinstance(e, tuple) else example(e) for e in examples]
    ids = [i for p in pairs for i in p[0]]
    mask = [m for p in pairs for m in p[1]]
    return {
        INPUT_IDS: ids,
        LOSS_MASK: mask,
        SEQ_LENS: [len(p[0]) for p in pairs],
        EXAMPLE_IDS: list(range(first_id, first_id + len(pairs))),
        NUM_TOKENS: len(ids),
        NUM_LOSS_TOKENS: sum(mask),
    }


def random_rows(
    n: int, length: int, vocab: int = SMALL_VOCAB, per_row: int = 2, seed: int = 0
) -> list[dict]:
    """n rows of `length` tokens, each packing `per_row` examples of random ids in [3, vocab)."""
    rng = np.random.default_rng(seed)
    rows, next_id = [], 0
    for _ in range(n):
        cuts = (
            np.sort(rng.choice(np.arange(2, length - 1), per_row - 1, replace=False))
            if per_row > 1
            else []
        )
        bounds = [0, *cuts, length]
        parts = [rng.integers(3, vocab, bounds[i + 1] - bounds[i]).tolist() for i in range(per_row)]
        rows.append(pack(*parts, first_id=next_id))
        next_id += per_row
    return rows


@lru_cache(maxsize=8)
def _tokenizer_info(tokenizer_dir: str, added: tuple[str, ...]) -> dict:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    base = tokenizer_fingerprint(tok.backend_tokenizer)
    tok.add_tokens(list(added), special_tokens=True)
    return {
        "name_or_path": tokenizer_dir,
        "fingerprint": tokenizer_fingerprint(tok.backend_tokenizer),
        "base_fingerprint": base,
        "files_sha256": {},
        "chat_template_sha256": None,
        "length": len(tok),
        "bos_id": tok.bos_token_id,
        "eos_id": tok.eos_token_id,
        "pad_id": tok.pad_token_id,
        "added_tokens": list(added),
        "pad_vocab_to_multiple_of": None,
    }


def _write_split(out: Path, split: str, rows: list[dict], rows_per_shard: int) -> dict:
    (out / split).mkdir(parents=True, exist_ok=True)
    shards = []
    for index, start in enumerate(range(0, max(len(rows), 1), rows_per_shard)):
        chunk = rows[start : start + rows_per_shard]
        table = pa.Table.from_pylist(chunk, schema=row_schema())
        path = out / split / shard_name(index)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        data = path.read_bytes()
        shards.append(
            {
                "path": f"{split}/{shard_name(index)}",
                "rows": len(chunk),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    tokens = sum(r[NUM_TOKENS] for r in rows)
    max_length = max((r[NUM_TOKENS] for r in rows), default=1)
    return {
        "rows": len(rows),
        "examples": sum(len(r[SEQ_LENS]) for r in rows),
        "tokens": tokens,
        "loss_tokens": sum(r[NUM_LOSS_TOKENS] for r in rows),
        "max_length": max_length,
        "packing": "bfd",
        "packing_efficiency": tokens / (max_length * max(len(rows), 1)),
        "shards": shards,
    }


def write_build(
    out: Path,
    rows: list[dict],
    tokenizer_dir: Path | str = TOKENIZER_DIR,
    eval_rows: list[dict] | None = None,
    added_tokens: tuple[str, ...] = (),
    rows_per_shard: int = 1000,
    **manifest_overrides,
) -> Path:
    """Write a complete build (shards, then manifest.json last) to `out`; return `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": _write_split(out, "train", rows, rows_per_shard)}
    if eval_rows is not None:
        splits["eval"] = _write_split(out, "eval", eval_rows, rows_per_shard)
    manifest = {
        "format_version": FORMAT_VERSION,
        "sftprep_version": "test",
        "fingerprint": "0" * 64,
        "config": {},
        "tokenizer": dict(_tokenizer_info(str(tokenizer_dir), tuple(added_tokens))),
        "sources": [],
        "splits": splits,
        "dropped": {},
    }
    manifest.update(manifest_overrides)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return out


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A folder with the tiny Llama config.json, vocabulary cut to 512 (no weights: use random_init).

    initializer_range 0.1 instead of 0.02: with frozen random embeddings of std 0.02 and hidden
    size 64, no logit can lead by more than about 1.3, so LoRA alone could never halve the loss.
    """
    config = json.loads((TINY_LLAMA_DIR / "config.json").read_text())
    config["vocab_size"] = SMALL_VOCAB
    config["initializer_range"] = 0.1
    folder = tmp_path_factory.mktemp("small-llama")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def base_config(tmp_path, small_model_dir):
    """Keys for a fast CPU run on the small model; tests add data and override what they test."""
    return {
        "model": str(small_model_dir),
        "output_dir": str(tmp_path / "run"),
        "random_init": True,
        "dtype": "fp32",
        "attn": "sdpa",
        "tokenizer": str(TOKENIZER_DIR),
        "learning_rate": 3e-3,
        "logging_steps": 1,
        "training_args": {
            "disable_tqdm": True,
            "use_cpu": True,
            "dataloader_pin_memory": False,
            "save_only_model": False,
        },
    }
