"""The CLI's first import: while the rest of the CLI loads (typer, pyarrow, numpy: about half a
second), Ctrl-C, SIGTERM and SIGHUP end the process with one line and exit code 130 instead of a
KeyboardInterrupt traceback from inside some library's import. Nothing has been read or written yet,
so there is nothing to clean up. `hand_over` gives the signals back at the end of the imports;
the `sftprep` command takes them again (`take_over`) until a command's own handling
(`sftprep.cli.user_errors`) begins."""

import os
import signal

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _quit_while_starting(signum, frame) -> None:
    os.write(2, b"interrupted while starting: nothing was written\n")
    os._exit(130)


def _take_signals() -> dict:
    try:
        return {sig: signal.signal(sig, _quit_while_starting) for sig in _SIGNALS}
    except ValueError:  # imported outside the main thread: signals are not ours to take
        return {}


_previous = _take_signals()


def take_over() -> None:
    """Take Ctrl-C, SIGTERM and SIGHUP again, for the command line's start (`sftprep.cli.run`:
    typer builds its commands, the flags are parsed) until `hand_over`."""
    if not _previous:
        _previous.update(_take_signals())


def hand_over() -> None:
    """Give Ctrl-C, SIGTERM and SIGHUP back the handlers they had before (at the end of the CLI's
    imports, so that importing it changes nothing; and when a command's own handling begins)."""
    for sig, handler in _previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    _previous.clear()
