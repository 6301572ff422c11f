"""The build fingerprint: a hash of everything that decides the output, so that a rebuild with
the same one is a no-op ("up to date")."""

import hashlib
import json

from schemas import FORMAT_VERSION
from sftprep.stages.fast_encoder import fingerprint_part
from sftprep.stages.fast_render import fingerprint_part as renderer_part
from sftprep.stages.loop_steps import fingerprint_part as steps_part
from sftprep.stages.source_stats import SourceStats
from sftprep.stages.tokenizer import LoadedTokenizer
from sftprep.version import __version__

NOT_IN_FINGERPRINT = (
    "out",
    "overwrite",
    "num_proc",
    "engine",
    "ray_address",
    "ray_workers",
    "encoder",
    "renderer",
    "sources",
    "eval_sources",
    "tokenizer",
    "chat_template",
)
"""Config keys that do not decide the output (num_proc, engine), or enter it by content instead of by
name (sources by sha256, the tokenizer and template by their fingerprints and text)."""


def build_fingerprint(config: dict, stats: list[SourceStats], tokenizer: LoadedTokenizer) -> str:
    """Hash of the config's output-deciding keys, source contents, tokenizer, template, version."""
    payload = {
        "format_version": FORMAT_VERSION,
        "sftprep_version": __version__,
        "config": {k: v for k, v in config.items() if k not in NOT_IN_FINGERPRINT},
        "sources": [[st.split, st.source.kind, st.sha256, st.source.settings] for st in stats],
        "tokenizer": tokenizer.fingerprint,
        "special_tokens": tokenizer.special_tokens,
        "chat_template": tokenizer.chat_template,
        "added_tokens": tokenizer.added_tokens,
        "pipeline": tokenizer.pipeline,
        "encoder": fingerprint_part(config.get("encoder", "auto")),
        "renderer": renderer_part(config.get("renderer", "auto")),
        "loop_steps": steps_part(config.get("renderer", "auto")),
    }
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()
