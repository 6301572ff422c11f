"""Rules both stages apply to the folder they write (sftprep's `--out`, sfttrain's `--output-dir`):
never a file or a path under one, never the current folder, and one writer at a time.

The lock is a file beside the folder (`.NAME.lock`), held with flock(2) for the whole job: the OS
releases it when the process dies, so a killed job never blocks the next one. Errors are raised
as the calling stage's own exception class, so each CLI prints them as one line.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def path_problem(folder: Path, flag: str) -> str | None:
    """Why `folder` cannot be written as a folder of its own (None: it can)."""
    target = folder.resolve()
    if folder.exists() and not folder.is_dir():
        return f"{flag} {folder} is a file, not a folder; give the path of a new folder"
    if under := next((p for p in target.parents if p.exists() and not p.is_dir()), None):
        return f"{flag} {folder} lies under {under}, which is a file; give another path"
    if target == Path.cwd().resolve():
        return (
            f"{flag} {folder} is the current folder, which the job would fill or replace; "
            "give it a folder of its own"
        )
    return None


@contextmanager
def folder_lock(folder: Path, flag: str, error: type[Exception]) -> Iterator[None]:
    """Hold the lock of `folder` for the block; raise `error` in one line when another process
    holds it. Creates the folders above `folder` that are missing, and removes them again (if
    still empty) when the block fails, so a failed job leaves no trace."""
    target = folder.resolve()
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    handle, done = None, False
    try:
        handle = _locked(lock_path, folder, flag, error)
        yield
        done = True
    finally:
        _release(handle, lock_path)  # first: the lock file would keep the parent from being empty
        if not done:
            _remove_empty(created)


def _locked(lock_path: Path, folder: Path, flag: str, error: type[Exception]):
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 - held open for the whole job
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise error(
                f"{flag} {folder} is being written by another process (pid {holder}); wait for it "
                f"to finish, or choose another {flag}"
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
