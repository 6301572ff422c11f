"""The tokenizer fingerprint both stages compute, so a build can be matched to a model's tokenizer.

It hashes what decides token ids (the full vocabulary with added tokens, and the ids of a probe
text that exercises the normalizer and pre-tokenizer), not file bytes: a tokenizer re-saved by
another library version keeps its fingerprint as long as it tokenizes the same way.
"""

import hashlib
import json

PROBE_TEXT = (
    "Hello, World! 123 4567  double  spaces\ttab\nnewline\r\n"
    " leading and trailing   \u00e9\u00e8 \u4f60\u597d \U0001f600 caf\u00e9 na\u00efve"
    " <|im_start|><|im_end|><|endoftext|><s></s><|begin_of_text|><|eot_id|>"
)


def tokenizer_fingerprint(backend) -> str:
    """sha256 hex of a `tokenizers.Tokenizer`'s vocabulary and its ids for a fixed probe text."""
    vocab = sorted(backend.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    probe = backend.encode(PROBE_TEXT, add_special_tokens=False).ids
    payload = json.dumps(
        {"vocab": vocab, "probe": probe}, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
