"""The tokenizer as transformers 5 loads it, without importing transformers (which imports torch).

transformers 5 does not take every `tokenizer.json` as shipped: for a SentencePiece-style Llama
tokenizer (`tokenizer_class` LlamaTokenizer or CodeLlamaTokenizer, BPE with byte fallback, not
byte-level) it rebuilds the pipeline with a Metaspace pre-tokenizer and no normalizer, and for
Gemma it sets its own normalizer and pre-tokenizer. The two differ where text right after a
special token starts with a space (`</s> b`: the file as shipped gives an extra `▁`). The ids a
trainer's `apply_chat_template(tokenize=True)` returns are transformers', so the build mirrors
these rebuilds; the manifest records which one it used (`tokenizer.pipeline`).
"""

import json

from tokenizers import Tokenizer

AS_SHIPPED = "tokenizer.json"
LLAMA_CLASSES = frozenset({"LlamaTokenizer", "CodeLlamaTokenizer"})
GEMMA_CLASSES = frozenset({"GemmaTokenizer"})


def transformers_backend(tokenizer_json: bytes, config: dict) -> tuple[Tokenizer, str]:
    """The Rust tokenizer transformers 5 would build from these files, and the name of its pipeline."""
    declared = str(config.get("tokenizer_class") or "").removesuffix("Fast")
    if declared not in LLAMA_CLASSES | GEMMA_CLASSES:  # parse the (large) file only when needed
        return Tokenizer.from_str(tokenizer_json.decode("utf-8")), AS_SHIPPED
    spec = json.loads(tokenizer_json)
    if declared in LLAMA_CLASSES and not _byte_level(spec):
        scheme = _prepend_scheme(config)
        spec["normalizer"] = None
        spec["pre_tokenizer"] = {
            "type": "Metaspace",
            "replacement": "\u2581",
            "prepend_scheme": scheme,
            "split": False,
        }
        spec["model"]["unk_token"] = None
        return Tokenizer.from_str(
            json.dumps(spec)
        ), f"transformers-5:{declared}(metaspace={scheme})"
    if declared in GEMMA_CLASSES and not _byte_level(spec):
        spec["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
        spec["pre_tokenizer"] = {
            "type": "Split",
            "pattern": {"String": " "},
            "behavior": "MergedWithPrevious",
            "invert": False,
        }
        return Tokenizer.from_str(json.dumps(spec)), f"transformers-5:{declared}"
    return Tokenizer.from_str(tokenizer_json.decode("utf-8")), AS_SHIPPED


def _byte_level(spec: dict) -> bool:
    """Whether tokenizer.json declares a ByteLevel pre-tokenizer or decoder (Llama-3 style files
    that still name LlamaTokenizer: transformers then loads them as shipped)."""
    return '"ByteLevel"' in json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])


def _prepend_scheme(config: dict) -> str:
    """transformers' choice: `always` for the legacy behaviour, `first` otherwise, `never` without
    a prefix space."""
    if config.get("add_prefix_space") is False:
        return "never"
    return "always" if config.get("legacy", False) else "first"
