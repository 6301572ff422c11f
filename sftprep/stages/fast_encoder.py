"""An exact fast encoder: `fastokens` (byte-level BPE in Rust, 45-66x the HF encoder per thread,
measured on Qwen3, Llama-3 and SmolLM2) where the tokenizer qualifies, proven equal to HF.

Exactness is checked, not assumed:
- the tokenizer must qualify (`fast_encoder_problem`): BPE without byte fallback or dropout,
  normalizer none or NFC, ByteLevel (or Split ... + ByteLevel) pre-tokenizer, no normalized added
  tokens, every vocabulary entry a byte-level string;
- at load, a probe set of adversarial strings must encode identically with both (`probe`);
- in the build, every row of a worker's first chunk and every SAMPLE_EVERY-th row after it are
  re-encoded with HF, and any difference stops the build (EncoderMismatch);
- per row, HF encodes instead when fastokens raises (BaseException: a Rust panic is not an
  Exception), when the ids' byte lengths do not add up to the text's UTF-8 length, or when an NFC
  tokenizer meets text that is not NFC already. Those rows are counted (the manifest's
  `encoder_fallback_rows`).

fastokens gives no offsets; masks do not need them: each token's byte end comes from the
vocabulary (fast_batch.py).
"""

from __future__ import annotations

import importlib.util
import json
import threading

import numpy as np

from sftprep.errors import SftprepError
from sftprep.stages.fast_batch import FastBatch, flat_batch
from sftprep.stages.fast_preparse import parsed, take_parse
from sftprep.version import installed

SAMPLE_EVERY = 64
"""After a worker's first chunk, every this-many-th row is also encoded with HF and compared."""

PROBE_TEXTS = (
    "",
    " ",
    "  \n\n\t  x",
    "Hello, world! Hello,world!!  ",
    "naïve café Ωmega ß ﬁ Å Å",  # composed and decomposed forms
    "e\u0301 a\u0308 \u1e9b\u0323",  # combining marks
    "日本語のテキスト、中文文本。한국어",
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 👍🏽 \U0001f600\U0001f601",
    "מימין לשמאל עברית and العربية",
    "digits 1234567890 3.14159 1,000,000 0x1F",
    "tabs\tand\r\nwindows\r\nlines\x0b\x0c",
    "control \x00\x01\x13\x1f\x7f chars",
    "'s 't 're 've 'm 'll 'd 'S 'T",
    "    def f(x):\n        return x  # code\n",
    "a" * 300 + " " + "b" * 300,
    "\u200b\u200c\u200d\ufeff zero widths",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|><s></s>",
)


class EncoderMismatch(SftprepError):
    """The fast encoder gave other ids than HF for a row: the build stops (never a silent change)."""


def fast_encoder_problem(tokenizer_json: dict) -> str | None:
    """Why this tokenizer.json cannot use the fast encoder exactly, or None when it can."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        return f"its model is {model.get('type')}, not BPE"
    if model.get("byte_fallback"):
        return "it uses byte fallback"
    if model.get("dropout"):
        return "it uses BPE dropout"
    normalizer = _normalizer(tokenizer_json)
    if normalizer is not None and normalizer.get("type") != "NFC":
        return f"its normalizer is {normalizer.get('type')}"
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if not kinds or kinds[-1] != "ByteLevel" or any(k != "Split" for k in kinds[:-1]):
        return f"its pre-tokenizer is {'+'.join(map(str, kinds)) or 'none'}, not ByteLevel"
    if normalizer is not None and any(
        t.get("normalized") for t in tokenizer_json.get("added_tokens", [])
    ):
        return "it has normalized added tokens"
    return None


def _normalizer(tokenizer_json: dict) -> dict | None:
    """The normalizer, with a Sequence of none or one step read as that step."""
    normalizer = tokenizer_json.get("normalizer")
    if normalizer and normalizer.get("type") == "Sequence" and len(normalizer["normalizers"]) <= 1:
        return (normalizer["normalizers"] or [None])[0]
    return normalizer


class FastBackend:
    """encode_batch with HF's signature, answered by fastokens where that is exact (see module)."""

    def __init__(self, hf, fast, byte_lengths: np.ndarray, nfc: bool, special: dict):
        self.hf, self.fast, self.byte_lengths, self.nfc = hf, fast, byte_lengths, nfc
        self.special = special
        """add_special_tokens -> (prefix ids, suffix ids) the post-processor adds around a text."""
        self.rows_seen = 0
        self.first_chunk = True

    def fresh(self) -> FastBackend:
        """The same encoder for a new build: its first chunk is compared whole again."""
        return FastBackend(self.hf, self.fast, self.byte_lengths, self.nfc, self.special)

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list:
        """Per text: a FastEncoding, or HF's Encoding where the fast one could not be trusted."""
        batch = self.encode_flat(texts, add_special_tokens)
        return [batch.encoding(i) for i in range(len(texts))]

    def encode_flat(self, texts: list[str], add_special_tokens: bool = True) -> FastBatch:
        """The texts' FastBatch: fastokens' ids, HF's Encoding for the rows it cannot vouch for;
        the sampled rows compared with HF (an EncoderMismatch on a difference)."""
        batch = self._batch(texts, add_special_tokens)
        self._compare_sample(texts, batch, add_special_tokens)
        return batch

    def _batch(self, texts: list[str], add_special: bool) -> FastBatch:
        batch, untrusted = flat_batch(texts, *self._flat(texts), self.byte_lengths, self.nfc)
        batch.prefix, batch.suffix = self.special[add_special]
        if untrusted:
            again = self.hf.encode_batch(
                [texts[i] for i in untrusted], add_special_tokens=add_special
            )
            batch.fallback = dict(zip(untrusted, again))
        return batch

    def _flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, set]:
        """fastokens' ids of all texts end to end, each text's [start, end) in them, and the
        texts it raised on (no ids)."""
        _encoded_here()
        try:
            ids, offsets = self.fast.encode_batch_flat(texts)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - a Rust panic; encode one by one to find the row
            each = [self._one(t) for t in texts]
            failed = {i for i, e in enumerate(each) if e is None}
            sizes = [0 if e is None else len(e) for e in each]
            flat = [e for e in each if e is not None]
            ids = np.concatenate(flat) if flat else np.zeros(0, dtype=np.uint32)
            return ids, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), failed
        return np.frombuffer(ids, dtype="<u4"), np.frombuffer(offsets, dtype="<u8"), set()

    def _one(self, text: str):
        _encoded_here()
        try:
            return np.asarray(self.fast.encode(text, add_special_tokens=False).ids, dtype=np.uint32)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - see _flat
            return None

    def _compare_sample(self, texts: list[str], batch: FastBatch, add_special: bool) -> None:
        """Re-encode the first chunk, then every SAMPLE_EVERY-th row, with HF; stop on a difference."""
        if self.first_chunk:
            chosen = range(len(texts))
            self.first_chunk = False
        else:
            chosen = range(-self.rows_seen % SAMPLE_EVERY, len(texts), SAMPLE_EVERY)
        self.rows_seen += len(texts)
        chosen = [i for i in chosen if i not in batch.fallback]
        if not chosen:
            return
        reference = self.hf.encode_batch([texts[i] for i in chosen], add_special_tokens=add_special)
        prefix, suffix = batch.prefix.tolist(), batch.suffix.tolist()
        for i, enc in zip(chosen, reference):
            a, b = int(batch.offsets[i]), int(batch.offsets[i + 1])
            if prefix + batch.ids[a:b].tolist() + suffix != enc.ids:
                raise EncoderMismatch(
                    f"the fast encoder (fastokens) and the HF tokenizer give different ids for the "
                    f"text {texts[i][:60]!r}...: the build stopped; rebuild with --encoder hf "
                    "(and report the text to sftprep)"
                )


def byte_lengths(hf) -> np.ndarray | str:
    """UTF-8 byte length of every id's text (added tokens: their content), or why it cannot be told."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = set(ByteLevel.alphabet())
    vocab = hf.get_vocab(with_added_tokens=False)
    added = hf.get_added_tokens_decoder()
    plain = {token: i for token, i in vocab.items() if i not in added}
    if stray := set("".join(plain)) - alphabet:
        return f"its vocabulary holds {sorted(stray)[0]!r}, not a byte-level character"
    lengths = np.zeros(max([*vocab.values(), *added, 0]) + 1, dtype=np.int64)  # ids may have holes
    lengths[np.fromiter(plain.values(), dtype=np.int64, count=len(plain))] = np.fromiter(
        map(len, plain), dtype=np.int64, count=len(plain)
    )
    for i, token in added.items():
        lengths[i] = len(token.content.encode("utf-8"))
    return lengths


_ENCODED_IN_THIS_PROCESS = False
"""Whether fastokens has encoded here: its first encode starts worker threads, which a fork
would not carry over (the child would wait on them forever), so from then on workers are spawned."""


def _encoded_here() -> None:
    global _ENCODED_IN_THIS_PROCESS
    _ENCODED_IN_THIS_PROCESS = True


def fastokens_threads_started() -> bool:
    """Whether this process has started fastokens' worker threads (see _ENCODED_IN_THIS_PROCESS)."""
    return _ENCODED_IN_THIS_PROCESS


def load_fast_backend(hf, mode: str, key=None, parse=None) -> tuple[FastBackend | None, str]:
    """The fast backend for this HF tokenizer (after sftprep added its tokens), or None and why.
    mode: auto (None when it does not qualify or fastokens is missing) or fast (then an error).
    With a `key` (the tokenizer's fingerprint), a process loads and probes each tokenizer once,
    and uses the backend `construct_backend` built (here or in the parent it was forked from).
    `parse`: fastokens' parse of the same tokenizer.json, started early (fast_preparse)."""
    if key is None or key not in _LOADED:
        built = _CONSTRUCTED.get(key) if key is not None else None
        loaded = _probed(*(built or _construct(hf, parse)))
        if key is not None:
            _LOADED[key] = loaded
    problem, backend = loaded if key is None else _LOADED[key]
    if problem and mode == "fast":
        raise _refusal(problem)
    return (None if backend is None else backend.fresh()), problem or "fastokens"


def _refusal(problem: str) -> SftprepError:
    return SftprepError(f"--encoder fast cannot be used: {problem}; use --encoder auto or hf")


def construct_backend(hf, key, parse=None) -> None:
    """Build the fast backend for `key` in this thread without encoding anything (no fastokens
    thread starts): worker processes forked after it inherit it and only run the probe."""
    if key not in _LOADED and key not in _CONSTRUCTED:
        _CONSTRUCTED[key] = _construct(hf, parse)  # waits for an early parse to end


def _probed(problem: str | None, backend: FastBackend | None):
    if backend is not None and (mismatch := probe(backend)):
        return mismatch, None
    return problem, backend


def light_spec(hf) -> dict:
    """What fast_encoder_problem reads of tokenizer.json, from the loaded tokenizer's parts: its
    model's type and flags, normalizer, pre-tokenizer and added tokens. Parsing the whole JSON
    (mostly the vocabulary and merges) takes 0.2-0.5 s for a 150k vocabulary; this, milliseconds."""

    def state(part) -> dict | None:
        return None if part is None else json.loads(part.__getstate__())

    model = hf.model
    return {
        "model": {
            "type": type(model).__name__,
            "byte_fallback": getattr(model, "byte_fallback", False),
            "dropout": getattr(model, "dropout", None),
        },
        "normalizer": state(hf.normalizer),
        "pre_tokenizer": state(hf.pre_tokenizer),
        "added_tokens": [
            {"normalized": t.normalized} for t in hf.get_added_tokens_decoder().values()
        ],
    }


def _construct(hf, parse=None) -> tuple[str | None, FastBackend | None]:
    spec = light_spec(hf)
    if problem := _cheap_problem(spec):
        return problem, None
    import fastokens

    lengths = byte_lengths(hf)
    if isinstance(lengths, str):
        return f"the tokenizer does not qualify ({lengths})", None
    try:
        fast = parsed(parse) or fastokens.Tokenizer.from_json_str(hf.to_str())
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C during the load: the user's, not a panic
        raise
    except BaseException as err:  # noqa: BLE001 - a Rust panic on an unusual tokenizer.json
        return f"fastokens cannot load the tokenizer ({type(err).__name__}: {err})", None
    special = {flag: _special_ids(hf, flag) for flag in (True, False)}
    if any(s is None for s in special.values()):
        return "its post-processor does more than add tokens around the text", None
    nfc = (_normalizer(spec) or {}).get("type") == "NFC"
    return None, FastBackend(hf, fast, lengths, nfc, special)


def _special_ids(hf, add_special: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """(prefix, suffix) ids the HF post-processor adds around a text, or None if it does more."""
    plain = hf.encode("probe text", add_special_tokens=False).ids
    full = hf.encode("probe text", add_special_tokens=add_special).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return (
                np.asarray(full[:start], dtype=np.int32),
                np.asarray(full[start + len(plain) :], dtype=np.int32),
            )
    return None


def probe(backend: FastBackend, texts=PROBE_TEXTS) -> str | None:
    """None when every probe text encodes to HF's ids with both special-token settings (each
    call's first chunk is compared whole, see _compare_sample), else what differs."""
    for add_special in (True, False):
        backend.first_chunk = True
        try:
            backend.encode_batch(list(texts), add_special_tokens=add_special)
        except EncoderMismatch as err:
            return f"the fast encoder differs from HF on a probe text ({err})"
    return None


def fingerprint_part(mode: str) -> list:
    """What the build fingerprint holds of the encoder: the mode asked and the fastokens version
    that could answer it (cheap: the up-to-date check runs before the encoder is loaded)."""
    return [mode, None if mode == "hf" else installed("fastokens")]


_LOADED: dict = {}
"""tokenizer fingerprint -> (note, FastBackend | None): a process loads and probes it once."""
_CONSTRUCTED: dict = {}
"""tokenizer fingerprint -> (note, FastBackend | None) built but not yet probed (construct_backend)."""


def choose_encoder(tokenizer, mode: str) -> None:
    """Set the tokenizer's encoder for --encoder `mode` (auto | hf | fast): name, version and
    (fastokens) a LazyFast that loads and probes it on first use; in place, before the first
    row is encoded. Only the cheap qualification runs here (loading fastokens takes about a
    second for a 150k vocabulary): a process that encodes nothing never pays for it."""
    import tokenizers

    if mode == "hf" or (problem := _cheap_problem(light_spec(tokenizer.backend))):
        if mode == "fast":
            raise _refusal(problem)
        tokenizer.fast = None
        tokenizer.encoder, tokenizer.encoder_version = "hf", tokenizers.__version__
        return
    key = (tokenizer.fingerprint, tokenizer.pipeline)
    tokenizer.fast = LazyFast(tokenizer.backend, mode, key, take_parse(tokenizer))
    tokenizer.encoder, tokenizer.encoder_version = "fastokens", installed("fastokens")


def _cheap_problem(spec: dict) -> str | None:
    """Why the fast encoder cannot be used for this tokenizer.json, as far as it can be told
    without loading it: fastokens missing, or the tokenizer does not qualify."""
    if importlib.util.find_spec("fastokens") is None:
        return "fastokens is not installed (pip install fastokens)"
    problem = fast_encoder_problem(spec)
    return f"the tokenizer does not qualify ({problem})" if problem else None


class LazyFast:
    """The fast backend, loaded and probed once, by the first thread that asks (`start` asks in
    a background thread, so that loading overlaps the first render: fastokens releases the GIL
    while it parses). If it fails in auto mode every row goes to HF, counted as a fallback."""

    def __init__(self, hf, mode: str, key, parse=None):
        self.hf, self.mode, self.key, self.parse = hf, mode, key, parse
        self._lock = threading.Lock()
        self._started = False
        self._done = False
        self._asked = False  # whether a chunk was already handed to HF while loading
        self._backend: FastBackend | None = None
        self._error: SftprepError | None = None

    def start(self) -> None:
        """Begin loading in a background thread, once. Not a daemon: a daemon thread still inside
        Rust when the interpreter exits (Ctrl-C, an error) aborts with "FATAL: exception not
        rethrown"; exit waits for the load instead (about a second at most)."""
        if not self._started:
            self._started = True
            threading.Thread(target=self._load_quietly, name="fastokens-load").start()

    def current(self) -> FastBackend | None:
        """The backend if loaded; while it loads, None at once for the first chunk asked (auto:
        HF encodes that one, the smallest, beside the load) and a wait for every later one.
        Measured on 2 cores (bench/RESULTS.md, session 15): HF-encoding the 896 rows of the
        first three chunks took longer than the whole load, so later chunks wait (about a
        second at most, while the next chunk is rendered). --encoder fast always waits (and
        raises the load's error)."""
        if self.mode == "fast":
            return self.get()
        if self._done:
            return self._backend
        if not self._asked:
            self._asked = True
            return None
        return self.get()

    def ready_to_fork(self) -> bool:
        """Build the backend in this thread, encoding nothing, so that worker processes forked
        now inherit it and only probe it (instead of each loading it: about 2 s of CPU for a
        150k vocabulary). False when a fork is not safe: a background load started here (its
        thread may be inside fastokens), or fastokens already encoded in this process."""
        if self._started or fastokens_threads_started():
            return False
        if not self._done:
            construct_backend(self.hf, self.key, self.parse)
        return not fastokens_threads_started()

    def get(self) -> FastBackend | None:
        """The loaded backend (None: use HF); raises the load's SftprepError in fast mode."""
        self._load_quietly()
        if self._error is not None:
            raise self._error
        return self._backend

    def _load_quietly(self) -> None:
        with self._lock:
            if self._done:
                return
            try:
                self._backend, _ = load_fast_backend(self.hf, self.mode, self.key, self.parse)
            except SftprepError as err:
                self._error = err
            self._done = True
