"""`sftprep verify --full`: build the same config again with the Hugging Face encoder alone and
compare every shard, byte for byte.

The fast encoder (stages/fast_encoder.py) is checked during a build on a sample of rows; this is
the check of every row. A rebuild rather than a decode-and-compare of each example: it re-runs
the very code that made the shards (render, masks, length policy, packing) with the reference
encoder, so equal shard hashes mean equal ids, masks, packing and example ids everywhere, and any
difference is named by its shard. It needs the build's sources and tokenizer, unchanged, at the
paths its manifest records (relative paths from the folder the build ran in).
"""

import dataclasses
import shutil
import tempfile
from pathlib import Path

from schemas.manifest import ManifestError, read_manifest
from sftprep.config import recorded_config
from sftprep.errors import SftprepError


def reencode_problems(build: str | Path, progress=None) -> list[str]:
    """Every difference between the build at `build` and the same build with `--encoder hf`."""
    from sftprep.pipeline import run_build  # the build's whole machinery: imported when asked for

    build = Path(build)
    try:
        manifest = read_manifest(build)
    except ManifestError as err:
        return [str(err)]
    config = recorded_config(manifest)
    scratch = Path(tempfile.mkdtemp(prefix=".sftprep-reencode-", dir=build.parent))
    try:
        again = dataclasses.replace(
            config, out=str(scratch / "build"), encoder="hf", overwrite=False
        )
        try:
            rebuilt = run_build(again.validate(), progress).manifest
        except SftprepError as err:
            raise SftprepError(f"verify --full: the build cannot be made again: {err}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _differences(manifest, rebuilt)


def _differences(built, rebuilt) -> list[str]:
    problems = []
    for old, new in zip(built.sources, rebuilt.sources, strict=False):
        if old.content_sha256 != new.content_sha256:
            problems.append(
                f"source {old.path} changed since the build (sha256 {old.content_sha256[:12]} then, "
                f"{new.content_sha256[:12]} now); verify --full needs the sources it was built from"
            )
    if problems:
        return problems
    for split, info in built.splits.items():
        other = rebuilt.splits.get(split)
        if other is None:
            problems.append(f"split {split}: not made again with --encoder hf")
            continue
        mine = [(s.path, s.sha256) for s in info.shards]
        theirs = [(s.path, s.sha256) for s in other.shards]
        for (path, sha), (_, sha_hf) in zip(mine, theirs, strict=False):
            if sha != sha_hf:
                problems.append(
                    f"{path}: differs from the same build with --encoder hf (ids or masks of its "
                    "rows); rebuild with --encoder hf, and report the fast encoder's difference"
                )
        if len(mine) != len(theirs):
            problems.append(f"split {split}: {len(mine)} shards, {len(theirs)} with --encoder hf")
    return problems
