"""sftprep: prepare supervised fine-tuning data once, with exact token ids, provable loss masks and
isolated packing, into memory-mappable Arrow shards plus a manifest.

    import sftprep
    manifest = sftprep.build({"sources": ["data.jsonl"], "tokenizer": "tok/", "out": "build/"})

The public names load on first use (PEP 562), so that `import sftprep.cli` runs the CLI's first
line, which takes over Ctrl-C, before pyarrow, numpy or the pipeline are imported.
"""

from importlib import import_module

from sftprep.version import __version__

_PUBLIC = {
    "BuildConfig": "sftprep.config",
    "RowError": "sftprep.errors",
    "SftprepError": "sftprep.errors",
    "build": "sftprep.pipeline",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'sftprep' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
