"""The CLI's first import: while the rest of the CLI loads (typer, pyarrow, numpy: about half a
second), Ctrl-C, SIGTERM and SIGHUP end the process with one line and exit code 130 instead of a
KeyboardInterrupt traceback from inside some library's import. Nothing has been read or written yet,
so there is nothing to clean up. `hand_over` gives the signals back once the CLI's own handling
(`sftprep.cli.user_errors`) can take over."""

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


def hand_over() -> None:
    """Give Ctrl-C, SIGTERM and SIGHUP back the handlers they had before the CLI started loading."""
    for sig, handler in _previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    _previous.clear()
