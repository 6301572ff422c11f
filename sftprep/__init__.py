"""sftprep: prepare supervised fine-tuning data once, with exact token ids, provable loss masks and
isolated packing, into memory-mappable Arrow shards plus a manifest.

    import sftprep
    manifest = sftprep.build({"sources": ["data.jsonl"], "tokenizer": "tok/", "out": "build/"})
"""

from sftprep.config import BuildConfig
from sftprep.errors import RowError, SftprepError
from sftprep.pipeline import build
from sftprep.version import __version__

__all__ = ["BuildConfig", "RowError", "SftprepError", "build", "__version__"]
