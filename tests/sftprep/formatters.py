"""Formatters for tests that need a worker process to misbehave (imported by spawned workers)."""

import os
import signal


def sigkill_on_die(row: dict) -> dict:
    """A prompt/completion formatter that kills its own process on a row whose `q` is "die"."""
    if row["q"] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"prompt": row["q"], "completion": " " + row["a"]}
