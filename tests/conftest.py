"""Fixtures shared by all tests: where the bundled and shared assets are, and HF reference tokenizers."""

import os
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
BUNDLED_TOKENIZER = EXAMPLES / "smollm2-tokenizer"
SHARED_ASSETS = Path(os.environ.get("SFT_SHARED_ASSETS", REPO.parent / "shared" / "assets"))
TOKENIZER_NAMES = ("smollm2", "qwen3", "llama3")


def shared_tokenizer(name: str) -> Path:
    """Path of a real tokenizer in ../shared/assets; skips the test when the assets are absent."""
    path = SHARED_ASSETS / "tokenizers" / name
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"shared assets not found at {SHARED_ASSETS} (set SFT_SHARED_ASSETS)")
    return path


def shared_data(name: str) -> Path:
    path = SHARED_ASSETS / "data" / name
    if not path.is_file():
        pytest.skip(f"shared assets not found at {SHARED_ASSETS} (set SFT_SHARED_ASSETS)")
    return path


@cache
def hf_tokenizer(path: str, chat_template: str | None = None):
    """transformers' own tokenizer, the independent reference for ids and template masks."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if chat_template:
        tok.chat_template = Path(chat_template).read_text()
    return tok


def trl_template(name: str) -> Path:
    """A TRL `*_training.jinja` template (with {% generation %} markers), the reference for masks."""
    trl = pytest.importorskip("trl")
    path = Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja"
    if not path.is_file():
        pytest.skip(f"TRL does not ship {path.name}")
    return path
