"""Rows to encoded examples: normalize -> render -> tokenize + mask, one chunk of rows at a time.

Runs in worker processes (or inline). Each worker builds its tokenizer and compiled template once,
then turns chunks of `(row_index, row)` into `(row_index, Encoded | RowError)`, in order (packed,
packed_results.py, for the trip back from a worker).
"""

import dataclasses
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from sftprep.config import BuildConfig
from sftprep.drop_reasons import DropReason
from sftprep.errors import RowError, SftprepError
from sftprep.parallel import chunked
from sftprep.stages.chat_template import compile_template, template_variables
from sftprep.stages.fast_batch import FastBatch
from sftprep.stages.fast_encoder import choose_encoder
from sftprep.stages.flat_masks import finish_flat, flat_setting
from sftprep.stages.formats import FormatSpec, make_normalizer
from sftprep.stages.masks import finish_batch, tokenize_batch
from sftprep.stages.packed_results import PackedResults, joined, pack_results
from sftprep.stages.render import Rendered, render_example, require_unicode
from sftprep.stages.source_chunks import chunk_rows
from sftprep.stages.tokenizer import LoadedTokenizer, load_tokenizer


def adds_special_tokens(config: BuildConfig) -> bool:
    """Whether text examples get the tokenizer's BOS and an appended EOS: --special-tokens, except
    with wrapped packing and --no-concat-token (documents then run into each other on purpose)."""
    return config.special_tokens and (config.packing != "wrapped" or config.concat_token)


@dataclass
class RowEncoder:
    """Turns chunks of rows into encoded examples: the tokenizer, its compiled template, and the
    settings that change the ids (which turns train comes with each chunk's FormatSpec)."""

    tokenizer: LoadedTokenizer
    special_tokens: bool
    """See adds_special_tokens."""
    template_date: str | None = None
    """The date `strftime_now` renders (config `template_date`, resolved by the pipeline)."""
    template_seconds: float = 1.0
    """Time budget of one render (config `template_seconds`)."""
    template_max_mb: int = 64
    """Size budget of one render (config `template_max_mb`)."""
    max_text_mb: int = 8
    """Longest text an example may render to, in MiB of characters (config `max_text_mb`)."""
    renderer: str = "auto"
    """Renderer of the prefix renders that locate turns (config `renderer`, fast_render.py)."""

    def __post_init__(self):
        template = self.tokenizer.chat_template
        self.template = (
            compile_template(template, self.template_seconds, self.template_max_mb, self.renderer)
            if template
            else None
        )
        self.variables = template_variables(self.tokenizer.special_tokens, self.template_date)
        self.bos_id = self.tokenizer.token_id("bos_token")
        self.eos_id = self.tokenizer.token_id("eos_token")
        self._normalizers: dict[tuple, Callable] = {}
        if self.tokenizer.fast is not None:
            self.tokenizer.fast.start()  # loads while the first chunk is read and rendered

    def process(self, spec: FormatSpec, chunk: list) -> list:
        """Encode a chunk of (row_index, row | RowError); bad rows come back as RowError."""
        return self.process_packed(spec, chunk).unpacked()

    def process_packed(self, spec: FormatSpec, chunk: list) -> PackedResults:
        """`process`, packed (what a worker sends back)."""
        out = self.encode(self.render(spec, chunk))
        return out if isinstance(out, PackedResults) else pack_results(out)

    def render(self, spec: FormatSpec, chunk: list) -> tuple[list, list, list]:
        """First half (pure Python): normalize and render every row of a chunk."""
        key = repr(spec)  # every field: a spec differing anywhere gets its own normalizer
        normalize = self._normalizers.get(key)
        if normalize is None:
            normalize = self._normalizers[key] = make_normalizer(spec)
        results: list = []
        rendered, slots = [], []
        for row_index, row in chunk:
            if isinstance(row, RowError):
                results.append((row_index, row))
                continue
            try:
                example = normalize(row)
                variables = self.variables
                if spec.chat_template_kwargs or example.template_kwargs:
                    variables = {
                        **variables,
                        **(spec.chat_template_kwargs or {}),
                        **(example.template_kwargs or {}),
                    }
                text = render_example(
                    example, spec.loss_on, self.template, variables, spec.reasoning
                )
                if spec.id_markers:
                    text = dataclasses.replace(text, id_markers=spec.id_markers)
                rendered.append(require_unicode(self._require_size(text)))
            except RowError as err:
                results.append((row_index, err))
                continue
            slots.append(len(results))
            results.append((row_index, None))
        return results, rendered, slots

    def _require_size(self, rendered: Rendered) -> Rendered:
        """The text unchanged, or a `text_too_long` RowError: tokenizing takes ~150 bytes of memory
        per character (offsets and token strings), so one 200 MB document would need ~30 GB."""
        limit = self.max_text_mb << 20
        if len(rendered.text) > limit:
            raise RowError(
                DropReason.TEXT_TOO_LONG,
                f"the example is {len(rendered.text):,} characters, over the {limit:,} an example "
                "may hold (config max_text_mb, --max-text-mb); split the document, or raise the limit",
            )
        return rendered

    def encode(self, prepared: tuple[list, list, list]) -> list | PackedResults:
        """Second half: tokenize and mask a rendered chunk."""
        return self.finish(prepared, self.tokenize(prepared))

    def tokenize(self, prepared: tuple[list, list, list]) -> tuple[list | FastBatch, bool]:
        """Mostly Rust (the GIL is released): the Encodings of a rendered chunk (a FastBatch
        where one fast encode call takes it whole), and whether the fast encoder made them
        (while it is still loading, HF encodes the first chunk)."""
        fast = None if self.tokenizer.fast is None else self.tokenizer.fast.current()
        rendered = prepared[1]
        if (
            fast is not None
            and (setting := flat_setting(rendered, self.special_tokens)) is not None
        ):
            return fast.encode_flat([r.text for r in rendered], setting), True
        backend = self.tokenizer.backend if fast is None else fast
        return tokenize_batch(rendered, backend, self.special_tokens), fast is not None

    def finish(
        self, prepared: tuple[list, list, list], tokenized: tuple[list | FastBatch, bool]
    ) -> list | PackedResults:
        """Python: ids and masks from the Encodings, slotted back among the chunk's bad rows
        (packed, flat_masks.py, for a FastBatch)."""
        results, rendered, slots = prepared
        encodings, fast = tokenized
        if isinstance(encodings, FastBatch):
            bos_eos = (self.bos_id, self.eos_id)
            return finish_flat(prepared, encodings, bos_eos, self.special_tokens)
        for slot, enc in zip(
            slots,
            finish_batch(
                rendered,
                encodings,
                self.bos_id,
                self.eos_id,
                self.special_tokens,
                fast=fast,
            ),  # fmt: skip
        ):
            results[slot] = (results[slot][0], enc)
        return results


def encoder_for(tokenizer: LoadedTokenizer, config: BuildConfig) -> RowEncoder:
    """The RowEncoder a build with `config` uses (in the build process or in a worker)."""
    return RowEncoder(
        tokenizer,
        adds_special_tokens(config),
        config.template_date,
        config.template_seconds,
        config.template_max_mb,
        config.max_text_mb,
        config.renderer,
    )


_WORKER: RowEncoder | None = None


def init_worker(config: BuildConfig, fast: bool = False) -> None:
    """Pool initializer of a spawned worker: load the tokenizer and compile the template once per
    process; `fast`: the build process chose the fast encoder, so every worker must use it too."""
    global _WORKER
    _as_worker()
    tokenizer = load_tokenizer(
        config.tokenizer, config.chat_template, config.pad_vocab_to_multiple_of
    )
    choose_encoder(tokenizer, "auto" if fast else "hf")
    _WORKER = encoder_for(tokenizer, config)


def init_forked_worker(tokenizer: LoadedTokenizer, config: BuildConfig) -> None:
    """Pool initializer of a forked worker: the tokenizer (and the fast backend the build process
    built for it, not yet probed) came with the fork; only the template is compiled here."""
    global _WORKER
    _as_worker()
    _WORKER = encoder_for(tokenizer, config)


def _as_worker() -> None:
    # Ctrl-C and a hang-up reach the whole process group: they are the parent's to handle, in one
    # line. SIGTERM keeps its default (a forked worker would inherit the CLI's handler): it is how
    # the pool stops its workers (Process.terminate).
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The workers are the parallelism: one tokenizer thread each, not a thread pool per worker
    # fighting the others for the same cores. (Read by HF tokenizers at each call, so it also
    # holds in a forked worker whose parent had started HF's thread pool.)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def process_in_worker(task: tuple) -> PackedResults:
    """Pool task: (spec, chunk) -> results of RowEncoder.process, packed."""
    spec, chunk = task
    return _WORKER.process_packed(spec, chunk)


def process_file_chunk_in_worker(task: tuple):
    """Pool task: (spec, ChunkDescriptor) -> encode_file_chunk of it."""
    spec, chunk = task
    return encode_file_chunk(_WORKER, spec, chunk)


SUB_CHUNK_ROWS = 1024
"""A worker that reads its own chunk of a file encodes it this many rows at a time."""


def encode_file_chunk(
    encoder: RowEncoder, spec: FormatSpec, chunk
) -> tuple[int, PackedResults] | SftprepError:
    """(rows read, the packed [(row within the chunk, Encoded | RowError)]) of a chunk the worker reads
    itself (a source_chunks.ChunkDescriptor: a byte range, row groups), SUB_CHUNK_ROWS rows at a
    time, the first ones fewer (`chunked`), so the fast encoder's whole-call HF check of a
    worker's first call stays small; or the SftprepError of a file that cannot be read, returned
    for the build process to raise (a Ray task that raised would be retried)."""
    try:
        rows = chunk_rows(chunk)
    except SftprepError as err:
        return err
    parts = [encoder.process_packed(spec, part) for part in chunked(rows, SUB_CHUNK_ROWS)]
    return len(rows), joined(parts)  # rows numbered from 0 in the chunk
