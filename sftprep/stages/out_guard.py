"""What `--out` may be, and one writer at a time: a build never deletes what it did not make.

`--overwrite` replaces a folder only when it holds a complete sftprep build and nothing else:
the manifest and the shards it lists. The current folder, a source's folder (or any folder above
a source), a file, or a path under a file are refused whatever the flags. The lock (shared with
sfttrain, schemas/output_folder.py) is a file beside `--out`, held for the whole build.
"""

import os
from pathlib import Path

from schemas.contract import MANIFEST_NAME
from schemas.manifest import Manifest
from schemas.output_folder import folder_lock, path_problem
from sftprep.errors import SftprepError
from sftprep.stages.sources import Source

SHOWN_FILES = 3


def refuse_unsafe_out(out: Path, sources: list[Source]) -> None:
    """A one-line SftprepError when `out` could only be written by destroying something else."""
    if problem := path_problem(out, "--out"):
        raise SftprepError(problem)
    target = out.resolve()
    for source in sources:
        if source.kind == "hub":
            continue
        path = Path(os.path.realpath(source.path))
        if path == target or target in path.parents:
            raise SftprepError(
                f"--out {out} holds the source {source.path}, which a build would replace; give a folder of its own"
            )
        if path in target.parents:
            raise SftprepError(
                f"--out {out} lies inside the source folder {source.path}; give a folder outside the data"
            )


def foreign_files(out: Path, manifest: Manifest | None) -> list[str]:
    """Files under `out` that no build wrote (all of them when it holds no readable build)."""
    written = {MANIFEST_NAME}
    if manifest is not None:
        written |= {shard.path for split in manifest.splits.values() for shard in split.shards}
    return sorted(
        str(path.relative_to(out))
        for path in out.rglob("*")
        if not path.is_dir() and str(path.relative_to(out)) not in written
    )


def refuse_foreign_files(out: Path, manifest: Manifest | None) -> None:
    """A SftprepError naming what replacing `out` would delete that no build wrote."""
    if foreign := foreign_files(out, manifest):
        shown = ", ".join(foreign[:SHOWN_FILES]) + (" ..." if len(foreign) > SHOWN_FILES else "")
        raise SftprepError(
            f"--out {out} holds {len(foreign)} file(s) no sftprep build wrote ({shown}); a build replaces "
            "only a build folder, even with --overwrite: move them, or choose another --out"
        )


def build_lock(out: Path):
    """Hold the lock of `out` for the build (schemas/output_folder.py); one line when another
    build holds it."""
    return folder_lock(out, "--out", SftprepError)
