"""Budgets for one chat-template render: time and output size, so that a hostile or broken
template costs one row (`template_error`), never a hang, a multi-GB string or a crash.

Time: a daemon watchdog thread looks every POLL_SECONDS at when the current render started; past
RENDER_SECONDS it interrupts the main thread with SIGALRM, whose handler raises RenderTimeout
inside the render. A render only writes one timestamp, so the budget costs nothing measurable.
(Renders run on the main thread of the build and of each worker; elsewhere there is no watchdog.)
Size: string and list repetition (`"x" * 3e8`) and powers are checked before they are computed,
and the finished text must stay under MAX_RENDER_CHARS.
"""

import signal
import threading
import time
from collections.abc import Callable

RENDER_SECONDS = 1.0
POLL_SECONDS = 0.2
MAX_RENDER_CHARS = 64 << 20


class RenderTimeout(Exception):
    """A render ran past RENDER_SECONDS."""


class _Watchdog:
    def __init__(self):
        self.started: float | None = None
        self.main: int | None = None  # the main thread's ident, once the watchdog runs

    def start(self) -> None:
        """Start the watchdog thread and the SIGALRM handler (once, from the main thread)."""
        signal.signal(signal.SIGALRM, self._interrupt)
        self.main = threading.main_thread().ident
        threading.Thread(target=self._watch, name="render-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            started = self.started
            if started is not None and time.monotonic() - started > RENDER_SECONDS:
                self.started = None
                signal.pthread_kill(self.main, signal.SIGALRM)

    def _interrupt(self, signum, frame) -> None:
        raise RenderTimeout(f"the render took over {RENDER_SECONDS:g} s")


_WATCHDOG = _Watchdog()


def timed_render(render: Callable[[], str]) -> str:
    """`render()` under the time budget (see the module docstring). Costs two attribute writes and
    a thread-ident comparison per render; measured in A/B builds, a context manager here cost ~8%."""
    watchdog = _WATCHDOG
    if watchdog.main is None:
        if threading.current_thread() is not threading.main_thread():
            return render()
        watchdog.start()
    if threading.get_ident() != watchdog.main:
        return render()
    watchdog.started = time.monotonic()
    try:
        return render()
    finally:
        watchdog.started = None


def checked_binop(operator: str, left, right):
    """`left * right` or `left ** right` inside a template, refused when the result would be huge."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            repeats = isinstance(seq, (str, list, tuple)) and isinstance(times, (int, float))
            if repeats and len(seq) * max(times, 0) > MAX_RENDER_CHARS:
                raise OverflowError(
                    f"{len(seq)} x {times:g} repetition is over {MAX_RENDER_CHARS:,} items"
                )
        return left * right
    if (
        isinstance(left, (int, float))
        and isinstance(right, (int, float))
        and abs(right) > 4096
        and abs(left) > 1
    ):
        raise OverflowError(f"{left} ** {right} is too large")
    return left**right
