"""What `--out` may be, and one writer at a time: a build never deletes what it did not make.

`--overwrite` replaces a folder only when it holds a complete sftprep build and nothing else:
the manifest and the shards it lists. The current folder, a source's folder (or any folder above
a source), a file, or a path under a file are refused whatever the flags. The lock is a file
beside `--out`, held with flock(2) for the whole build: the OS releases it when the process dies,
so a killed build never blocks the next one.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from schemas.contract import MANIFEST_NAME
from schemas.manifest import Manifest
from sftprep.errors import SftprepError
from sftprep.stages.sources import Source

SHOWN_FILES = 3


def refuse_unsafe_out(out: Path, sources: list[Source]) -> None:
    """A one-line SftprepError when `out` could only be written by destroying something else."""
    target = out.resolve()
    if out.exists() and not out.is_dir():
        raise SftprepError(f"--out {out} is a file, not a folder; give the path of a new folder")
    if under := next((p for p in target.parents if p.exists() and not p.is_dir()), None):
        raise SftprepError(f"--out {out} lies under {under}, which is a file; give another path")
    if target == Path.cwd().resolve():
        raise SftprepError(
            f"--out {out} is the current folder, which a build would replace; give a folder of its own, e.g. --out build"
        )
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


@contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """Hold the lock of `out` for the block; refuse in one line when another build holds it.

    Creates the folders above `out` that are missing, and removes them again (if still empty)
    when the block fails, so a failed build leaves no trace.
    """
    target = out.resolve()
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    handle, done = None, False
    try:
        handle = _locked(lock_path, out)
        yield
        done = True
    finally:
        _release(handle, lock_path)  # first: the lock file would keep the parent from being empty
        if not done:
            _remove_empty(created)


def _locked(lock_path: Path, out: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return None
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 - held open for the whole build
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise SftprepError(
                f"--out {out} is being written by another build (pid {holder}); wait for it to finish, "
                "or choose another --out"
            ) from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file the previous holder unlinked as we opened it
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _release(handle, lock_path: Path) -> None:
    if handle is None:  # never locked (refused, or not POSIX)
        return
    lock_path.unlink(missing_ok=True)  # still holding it: nobody else can be between the two
    handle.close()


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return
