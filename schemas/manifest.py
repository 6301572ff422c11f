"""The manifest as typed, frozen records, and the one way each stage reads, writes and opens a build.

manifest.json stays the contract (`manifest.schema.json`, format_version 1); these records are
its in-memory form. `read_manifest` is the only reader: it checks that the file exists (its
presence means the build is complete), parses, checks the format version and the JSON Schema,
and returns a `Manifest`. `write_manifest` is the only writer (atomic, written last).
`Manifest.to_json()` gives back the same keys in the same order, so a manifest read and written
again is byte-identical. Nothing outside this package reads a manifest key as a string.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import pyarrow as pa

from schemas.contract import FORMAT_VERSION, MANIFEST_NAME, manifest_schema


class ManifestError(Exception):
    """A build folder that cannot be read: missing or incomplete, another version, or malformed.
    Each stage turns it into its own one-line error."""


@dataclass(frozen=True)
class ShardEntry:
    """One Arrow shard file of a split."""

    path: str
    """Relative to the build folder, e.g. train/00000.arrow."""
    rows: int
    tokens: int = 0
    loss_tokens: int = 0
    bytes: int = 0
    sha256: str = ""


@dataclass(frozen=True)
class SplitEntry:
    """The numbers of one split (train or eval) and its shards."""

    rows: int
    examples: int
    tokens: int
    loss_tokens: int
    max_length: int
    packing: str
    packing_efficiency: float
    length_histogram: dict = field(default_factory=dict)
    """{bin_edges: [...], counts: [...]} of example lengths."""
    shards: tuple[ShardEntry, ...] = ()


@dataclass(frozen=True)
class SourceEntry:
    """One input source: what was read from it, kept, dropped (by reason) and trained."""

    path: str
    split: str
    """train, eval, or train+eval (the eval split is held out of it by eval_fraction)."""
    content_sha256: str
    format: str
    example_id_start: int
    """Example ids of this source are example_id_start + row index."""
    rows_read: int
    rows_kept: int
    dropped: dict
    """reason -> rows dropped for it."""
    tokens: int = 0
    loss_tokens: int = 0
    truncated: int = 0
    truncated_tokens: int = 0
    split_examples: int = 0
    settings: dict = field(default_factory=dict)
    """The source's own keys from its `sources` entry (format overrides, take/fraction/repeat)."""
    repeat: int = 1
    """Copies of each kept row (under a sample or weight: the most any row got); example ids
    [start, start + rows_read * repeat), row = offset // repeat."""
    rows_unselected: int = 0
    """Rows read but left out by the source's `fraction`, sample or weight (rows_read = kept +
    dropped + unselected)."""
    examples: int = 0
    """Examples the build holds from this source, copies included (0 in builds before it was recorded)."""
    loss_share: float = 0.0
    """This source's share of the loss tokens of all sources of its split (as built)."""
    turns_located_by: dict = field(default_factory=dict)
    """way -> conversations whose turns were located that way (render.LOCATED_BY: one-render,
    loop-steps, every-prefix); rows encoded, before the length policy; empty for sources without
    conversations (or with no turn to locate: `loss_on: all`) and in builds before it was recorded."""


@dataclass(frozen=True)
class TokenizerEntry:
    """The tokenizer the build used, and how to check that a trainer's tokenizer is the same."""

    name_or_path: str
    fingerprint: str
    """Fingerprint of the tokenizer as the build used it (added tokens included)."""
    files_sha256: dict
    chat_template_sha256: str | None
    length: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    added_tokens: tuple[str, ...]
    base_fingerprint: str = ""
    """Fingerprint before the build added tokens; equal to `fingerprint` when it added none."""
    chat_template_source: str = ""
    chat_template: str | None = None
    special_tokens: dict = field(default_factory=dict)
    pad_vocab_to_multiple_of: int | None = None
    pipeline: str = "tokenizer.json"
    """How the ids were made: `tokenizer.json` as shipped, or `transformers-5:<class>`, the
    pipeline transformers 5 rebuilds for that tokenizer class."""
    encoder: str = "hf"
    """Which encoder made the ids: hf (the tokenizers library) or fastokens (proven equal, see README)."""
    encoder_version: str = ""
    encoder_fallback_rows: int = 0
    """Rows the fast encoder could not vouch for and HF encoded instead."""
    encoder_hf_rows: int = 0
    """Rows HF encoded: those fallbacks, and any encoded while fastokens was still loading."""

    def __post_init__(self):
        if not self.base_fingerprint:
            object.__setattr__(self, "base_fingerprint", self.fingerprint)


TOKENIZER_KEYS = (  # the order manifest.json has always had
    "name_or_path",
    "fingerprint",
    "base_fingerprint",
    "files_sha256",
    "chat_template_sha256",
    "chat_template_source",
    "chat_template",
    "special_tokens",
    "length",
    "bos_id",
    "eos_id",
    "pad_id",
    "added_tokens",
    "pad_vocab_to_multiple_of",
    "pipeline",
    "encoder",
    "encoder_version",
    "encoder_fallback_rows",
    "encoder_hf_rows",
)


@dataclass(frozen=True)
class Manifest:
    """Everything a build says about itself."""

    format_version: int
    sftprep_version: str
    fingerprint: str
    """Hash of everything that decides the output; a rebuild with the same one is a no-op."""
    config: dict
    """The build config, as plain JSON values."""
    tokenizer: TokenizerEntry
    sources: tuple[SourceEntry, ...]
    splits: dict
    """split name -> SplitEntry; train always, eval when asked for."""
    dropped: dict
    """reason -> rows dropped for it, over all sources."""
    created_at: str = ""
    elapsed_s: float = 0.0
    engine: str = "local"
    """Where the build's chunks were encoded: local or ray (not in the fingerprint)."""
    workers: int = 0
    """Processes that encoded: local worker processes (1: in the build process) or Ray actors
    (0 in builds before it was recorded)."""

    @property
    def train(self) -> SplitEntry:
        return self.splits["train"]

    @property
    def eval(self) -> SplitEntry | None:
        return self.splits.get("eval")

    def shards(self) -> list[ShardEntry]:
        """Every shard of every split, train first."""
        return [shard for split in self.splits.values() for shard in split.shards]

    def to_json(self) -> dict:
        """The manifest.json mapping, keys in their documented order."""
        return {
            "format_version": self.format_version,
            "sftprep_version": self.sftprep_version,
            "fingerprint": self.fingerprint,
            "created_at": self.created_at,
            "elapsed_s": self.elapsed_s,
            "engine": self.engine,
            "workers": self.workers,
            "config": self.config,
            "tokenizer": {key: _plain(getattr(self.tokenizer, key)) for key in TOKENIZER_KEYS},
            "sources": [_as_dict(s) for s in self.sources],
            "splits": {name: _split_json(split) for name, split in self.splits.items()},
            "dropped": self.dropped,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        """The records of a manifest.json mapping that already follows the schema."""
        tokenizer = dict(data["tokenizer"])
        tokenizer["added_tokens"] = tuple(tokenizer.get("added_tokens", ()))
        splits = {
            name: SplitEntry(
                **{
                    **_known(SplitEntry, split),
                    "shards": tuple(ShardEntry(**_known(ShardEntry, s)) for s in split["shards"]),
                }
            )
            for name, split in data["splits"].items()
        }
        return cls(
            format_version=data["format_version"],
            sftprep_version=data["sftprep_version"],
            fingerprint=data["fingerprint"],
            config=data["config"],
            tokenizer=TokenizerEntry(**_known(TokenizerEntry, tokenizer)),
            sources=tuple(SourceEntry(**_known(SourceEntry, s)) for s in data["sources"]),
            splits=splits,
            dropped=data["dropped"],
            created_at=data.get("created_at", ""),
            elapsed_s=data.get("elapsed_s", 0.0),
            engine=data.get("engine", "local"),
            workers=data.get("workers", 0),
        )


def read_manifest(build: str | Path) -> Manifest:
    """The manifest of a build folder; ManifestError if it is missing (the build is incomplete:
    sftprep writes it last), not JSON, of another format_version, or not the schema's shape."""
    build = Path(build)
    path = build / MANIFEST_NAME
    if build.is_file():
        raise ManifestError(
            f"{build} is a file, not a build folder: pass the folder `sftprep build --out` wrote"
        )
    if not path.is_file():
        state = (
            "does not exist"
            if not build.exists()
            else f"has no {MANIFEST_NAME}, so the build is incomplete (sftprep writes it last)"
        )
        raise ManifestError(
            f"{build} {state}: run `sftprep build ... --out {build}` to (re)build it"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(
            f"{path} is not valid JSON ({err}): rebuild with `sftprep build`"
        ) from None
    if not isinstance(data, dict):
        raise ManifestError(
            f"{path} holds JSON {type(data).__name__}, not a manifest object: rebuild with `sftprep build`"
        )
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{path} has format_version {version!r}, this version reads format_version {FORMAT_VERSION}: "
            "rebuild the data with this version's `sftprep build`, or install the version that wrote it"
        )
    details = schema_problems(data)
    if details:
        raise ManifestError(
            f"{path} does not follow the manifest schema ({details}): rebuild with `sftprep build`"
        )
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError, AttributeError) as err:  # only without jsonschema
        raise ManifestError(
            f"{path} does not have the manifest's shape ({type(err).__name__}: {err}): "
            "rebuild with `sftprep build`"
        ) from None


def schema_problems(data: dict) -> str:
    """Where `data` breaks schemas/manifest.schema.json ("" if nowhere), checked by jsonschema.
    jsonschema is optional for readers (a bare GPU image lacks it): without it only the shape
    Manifest.from_json needs is checked, there and then."""
    try:
        import jsonschema
    except ModuleNotFoundError:
        return ""
    validator = jsonschema.Draft202012Validator(manifest_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    return "; ".join(f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors[:10])


def write_manifest(build: Path, manifest: Manifest) -> None:
    """Write manifest.json last, via a temporary file and a rename, so that it exists only whole."""
    tmp = build / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, build / MANIFEST_NAME)


def shard_problems(build: str | Path, manifest: Manifest, sha256: bool) -> list[str]:
    """Every shard the manifest lists that is not there as recorded: listed twice, missing, of
    another size, or (with `sha256`) with other bytes. One line each, the shard named."""
    build = Path(build)
    problems, seen = [], set()
    for shard in manifest.shards():
        path = build / shard.path
        if shard.path in seen:
            problems.append(f"{shard.path} is listed twice in the manifest")
        elif not path.is_file():
            problems.append(f"{shard.path} is missing")
        elif (size := path.stat().st_size) != shard.bytes:
            problems.append(f"{shard.path} has {size} bytes, the manifest says {shard.bytes}")
        elif sha256 and (digest := file_sha256(path)) != shard.sha256:
            problems.append(
                f"{shard.path} has sha256 {digest[:12]}..., the manifest says {shard.sha256[:12]}..."
            )
        seen.add(shard.path)
    return problems


def open_shard(path: str | Path) -> pa.Table:
    """A shard's table, memory-mapped: zero copy, columns are views into the file."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _known(cls, data: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _as_dict(record) -> dict:
    return {f.name: _plain(getattr(record, f.name)) for f in fields(record)}


def _split_json(split: SplitEntry) -> dict:
    out = _as_dict(split)
    out["shards"] = [_as_dict(s) for s in split.shards]
    return out
