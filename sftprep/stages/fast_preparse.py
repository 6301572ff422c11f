"""fastokens parses `tokenizer.json` in a background thread while the HF tokenizer loads, for a
build that will surely encode, in this process or in workers forked from it. The parse takes
about 2 s for a 150k vocabulary (fastokens releases the GIL), longer than the HF load, the
tokenizer fingerprint and the up-to-date check together; started after them, it was what a small
build waited for last, and what forked workers waited for before they started (bench/RESULTS.md,
session 19).

The parse is used only for a tokenizer loaded as shipped (no transformers rebuild of the pipeline,
no tokens added by sftprep), matched by the file's sha256; every proof of the fast encoder
(qualification, probes, per-row checks, the HF sample) runs on it as on a parse of its own."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from pathlib import Path

from sftprep.stages.tokenizer_pipeline import AS_SHIPPED

_PARSES: dict[str, dict] = {}
"""sha256 of a tokenizer.json -> {"thread": the parse, "tokenizer": fastokens' or None}."""
_THREADS: list[threading.Thread] = []
"""Every early parse started in this process (see finish_parses)."""
_STARTED: set[str] = set()
"""Every tokenizer.json parsed early in this process: once is enough, a process keeps the fast
backend it loaded (fast_encoder._LOADED), so a second build in it would parse for nothing."""


def start_parse(folder: str) -> None:
    """Begin parsing `folder`/tokenizer.json with fastokens in a thread, if it may qualify (a
    ByteLevel tokenizer, fastokens installed) and this process has not parsed it early before. Not a daemon thread: one still inside Rust when
    the interpreter exits aborts it; an exit waits for the parse instead (2 s at most)."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file() or importlib.util.find_spec("fastokens") is None:
        return
    data = path.read_bytes()
    key = hashlib.sha256(data).hexdigest()
    if b'"ByteLevel"' not in data or key in _STARTED:  # only byte-level BPE can qualify
        return
    _STARTED.add(key)
    slot: dict = {"tokenizer": None}

    def parse() -> None:
        import fastokens

        try:
            slot["tokenizer"] = fastokens.Tokenizer.from_json_str(data.decode("utf-8"))
        except BaseException:  # noqa: BLE001 - a Rust panic: the load parses again and says why
            slot["tokenizer"] = None

    slot["thread"] = threading.Thread(target=parse, name="fastokens-parse")
    _PARSES[key] = slot
    _THREADS.append(slot["thread"])
    slot["thread"].start()


def finish_parses() -> None:
    """Wait for every early parse of this process to end, used or not: a fork must not happen
    while a thread is inside fastokens (the child would inherit whatever locks it held)."""
    for thread in _THREADS:
        thread.join()


def take_parse(tokenizer) -> dict | None:
    """The parse started for this LoadedTokenizer's tokenizer.json, if it applies (loaded as
    shipped, no added tokens); it is handed out once."""
    if tokenizer.pipeline != AS_SHIPPED or tokenizer.added_tokens:
        return None
    return _PARSES.pop(tokenizer.files_sha256.get("tokenizer.json", ""), None)


def parsed(slot: dict | None):
    """fastokens' tokenizer from a parse (waiting for it to end), or None."""
    if slot is None:
        return None
    slot["thread"].join()
    return slot["tokenizer"]
