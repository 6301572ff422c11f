"""The build config: one typed, validated place for every option and its default.

CLI flags and YAML keys map onto the same fields (flag `--max-length` is key `max_length`); flags
override the file. Types are checked on construction (schemas/config_fields.py), whether the
values come from YAML, flags or Python; `validate()` then checks values and combinations.
"""

import os
import string
from dataclasses import asdict, dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Literal

from schemas.config_fields import check_types, construct, read_yaml, unknown_keys
from sftprep.errors import ConfigError
from sftprep.source_settings import entry_problems

RESERVED_KWARGS = frozenset({"messages", "tools", "documents", "add_generation_prompt"})
"""Template variables the renderer passes itself; a chat_template_kwargs key of that name would
change what is rendered."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides what `sftprep build` writes."""

    sources: tuple[str | dict, ...] = field(
        default=(), metadata={"metavar": "SOURCE...", "flag": "SOURCE"}
    )
    """Training data: files (JSON, JSONL, Parquet, CSV, Arrow), globs, save_to_disk folders or hub
    names; in YAML an entry may be a mapping with `path` and per-source keys (README, Recipes)."""
    tokenizer: str = ""
    """Tokenizer folder (tokenizer.json + tokenizer_config.json) or hub name."""
    out: str = ""
    """Build folder to write (created atomically)."""
    eval_sources: tuple[str | dict, ...] = field(default=(), metadata={"flag": "--eval"})
    """Sources of the eval split (`--eval`); exclusive with eval_fraction."""
    eval_fraction: float = 0.0
    """Fraction of the training examples held out as the eval split, chosen by a seeded hash."""
    format: Literal["auto", "text", "messages", "prompt-completion"] = "auto"
    """auto | text | messages | prompt-completion."""
    text_field: str | None = None
    """Column holding plain text (default: `text`)."""
    messages_field: str | None = None
    """Column holding a conversation (default: `messages`, or ShareGPT `conversations`)."""
    prompt_field: str | None = None
    """Column holding the prompt (default: `prompt`)."""
    completion_field: str | None = None
    """Column holding the completion (default: `completion`)."""
    prompt_template: str | None = None
    """Text with plain `{column}` fields making the prompt, e.g. '### Q: {question}\\n### A:' (as a
    flag, \\n \\t \\r \\\\ are decoded)."""
    completion_template: str | None = None
    """Text with plain `{column}` fields making the completion, e.g. ' {answer}'; needs prompt_template."""
    response_template: str | None = None
    """On text: train only what follows this marker (its last occurrence, or each one up to
    instruction_template), matched on characters, e.g. ' ### Answer:'; a text without it is a
    `no_response_template` row."""
    instruction_template: str | None = None
    """With response_template: where each response ends (multi-turn text), e.g. '### Question:'."""
    response_template_ids: tuple[int, ...] = ()
    """On text: the marker as token ids (TRL's response_template ids), matched on the tokenized
    text's ids instead of its characters; exclusive with response_template."""
    instruction_template_ids: tuple[int, ...] = ()
    """With response_template_ids: where each response ends, as token ids."""
    chat_template_kwargs: dict = field(default_factory=dict)
    """Extra variables for the chat template, as apply_chat_template(**kwargs) passes them, e.g.
    {"enable_thinking": false} (per source in YAML; a row's `chat_template_kwargs` column wins)."""
    reasoning: Literal["train", "context", "drop"] = "train"
    """An assistant's reasoning (reasoning_content, or a <think> block): train | context (rendered,
    not trained: the answer and end tokens train) | drop (removed before rendering)."""
    system_prompt: str | None = None
    """System message prepended to every conversation that has none (per source in YAML)."""
    formatter: str | None = None
    """`module:function` called on each row; returns text, {prompt, completion} or messages."""
    chat_template: str | None = None
    """Jinja file overriding the tokenizer's template, or `chatml` to set up ChatML."""
    template_date: str | None = None
    """YYYY-MM-DD a chat template's `strftime_now` renders (GPT-OSS, Llama-3.1 print today's date);
    default: the day of the build, recorded in the manifest (null when the template reads no date)."""
    template_seconds: float = 1.0
    """Time budget of one chat-template render; a render past it is a `template_error` row (a
    template that hangs costs that row, not the build)."""
    template_max_mb: int = 64
    """Size budget of one chat-template render, in MiB of text; past it, a `template_error` row."""
    max_text_mb: int = 8
    """Longest text one example may render to, in MiB of characters (8 MiB is ~2M tokens, ~1.3 GB
    of memory to tokenize); a longer one is a `text_too_long` row, never a memory blow-up."""
    pad_vocab_to_multiple_of: int | None = None
    """With added tokens (chatml), ask the trainer to resize embeddings to a multiple of this."""
    loss_on: Literal["assistant", "last-assistant", "all"] = "assistant"
    """assistant | last-assistant | all. A message's own `train: true/false` overrides it."""
    max_length: int = 2048
    """Tokens per row."""
    packing: Literal["bfd", "wrapped", "none"] = "bfd"
    """bfd | wrapped | none."""
    overlong: Literal["truncate", "drop", "split"] = "truncate"
    """What to do with an example longer than max_length: truncate | drop | split."""
    truncation_side: Literal["right", "left"] = "right"
    """right keeps the start of an overlong example, left keeps its end."""
    concat_token: bool = True
    """wrapped packing: put EOS between documents."""
    special_tokens: bool = True
    """text format: let the tokenizer add its special tokens (BOS) and append EOS."""
    seed: int = 0
    """Seeds the eval split and the order of rows."""
    on_error: Literal["raise", "skip"] = "raise"
    """raise: stop at the first bad row. skip: drop it and count it by reason."""
    mix: Literal["rows", "tokens"] = "rows"
    """rows: each source gives its rows (as its take, fraction or repeat asks) | tokens: each
    source's `weight` sets its share of the trained (loss) tokens of the split, by whole examples
    drawn or repeated with the seed; the split keeps its number of trained tokens."""
    shard_size_mb: int = 256
    """Approximate size of one shard file."""
    encoder: Literal["auto", "hf", "fast"] = "auto"
    """Token encoder: fast (fastokens, exact and proven so, see README), hf (the tokenizers library), or auto (fast when the tokenizer qualifies and fastokens is installed, else hf). The ids do not depend on it."""
    renderer: Literal["auto", "jinja2", "minijinja"] = "auto"
    """How turns are located on templates that are not prefix-local (Qwen3's, Llama's, Gemma-3's): auto (the loop steps of one render for the published templates they are proven on, else minijinja's prefix renders where checks show it renders as Jinja2, see README), jinja2 (every prefix rendered by Jinja2), or minijinja (minijinja's prefix renders for any template you trust, and an error if minijinja cannot render it; loop steps as under auto). The text is always Jinja2's."""
    num_proc: int = 0
    """Worker processes (0 = choose: one process on up to 4 cores unless a source file has 16,000 rows or 64 MiB, one per core beyond). The output does not depend on it."""
    engine: Literal["local", "ray"] = "local"
    """Where chunks are encoded: local (this machine: this process, or --num-proc workers) or ray
    (actors on a Ray cluster; README "Beyond one machine"). The output does not depend on it."""
    ray_address: str | None = None
    """--engine ray: the Ray cluster to join (`auto`: the one `ray start` runs here, or its
    host:port); default: start Ray on this machine for the build."""
    ray_workers: int = 0
    """--engine ray: encoding actors, one CPU each (0 = one per CPU of the cluster)."""
    overwrite: bool = False
    """Replace a different build already in `out` (only a build folder: never a file no build wrote)."""

    def __post_init__(self):
        check_types(self, ConfigError)

    def validate(self) -> "BuildConfig":
        """Check values and combinations at once; raise one ConfigError listing all problems."""
        problems = self.value_problems()
        if problems:
            raise ConfigError.listing(problems)
        return self

    def value_problems(self, mistyped: frozenset = frozenset()) -> list[str]:
        """Values out of range, missing or conflicting (types are already checked). Keys in
        `mistyped` had a value of the wrong type, already reported: they are not called missing."""
        problems = []
        if not self.sources and "sources" not in mistyped:
            problems.append("no SOURCE given: pass at least one data file, folder or dataset name")
        if not self.tokenizer and "tokenizer" not in mistyped:
            problems.append("--tokenizer (config `tokenizer`) is required")
        if not self.out and "out" not in mistyped:
            problems.append("--out (config `out`) is required")
        if self.max_length < 2:
            problems.append(f"--max-length is {self.max_length}; it must be at least 2")
        if not 0.0 <= self.eval_fraction < 1.0:
            problems.append(f"--eval-fraction is {self.eval_fraction}; it must be in [0, 1)")
        if self.eval_fraction and self.eval_sources:
            problems.append("--eval-fraction and --eval both given: use one of them")
        if self.completion_template and not self.prompt_template:
            problems.append("--completion-template needs --prompt-template")
        if self.formatter and (self.prompt_template or self.completion_template):
            problems.append("--formatter and --prompt-template both given: use one of them")
        if self.formatter and ":" not in self.formatter:
            problems.append(f"--formatter is {self.formatter!r}; write it as module:function")
        if self.pad_vocab_to_multiple_of is not None and self.pad_vocab_to_multiple_of < 1:
            problems.append("--pad-vocab-to-multiple-of must be a positive integer")
        problems += _budget_problems(self.template_seconds, self.template_max_mb, self.max_text_mb)
        problems += _marker_problems(self.response_template, self.instruction_template)
        problems += _id_marker_problems(self)
        if reserved := sorted(RESERVED_KWARGS & set(self.chat_template_kwargs)):
            problems.append(
                f"--chat-template-kwargs sets {', '.join(reserved)}, which the renderer passes itself"
            )
        problems += _date_problems(self.template_date)
        problems += entry_problems(self, "sources") + entry_problems(self, "eval_sources")
        problems += _format_problems("--prompt-template", self.prompt_template)
        problems += _format_problems("--completion-template", self.completion_template)
        problems += _count_problems(self)
        return problems

    def to_dict(self) -> dict:
        """All fields as plain JSON values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


FIELD_NAMES = [f.name for f in fields(BuildConfig)]


def recorded_config(manifest) -> BuildConfig:
    """The BuildConfig a manifest records (keys this version does not know are ignored)."""
    return BuildConfig(**{k: v for k, v in manifest.config.items() if k in FIELD_NAMES})


def load_config(path: str | None, overrides: dict) -> BuildConfig:
    """Merge a YAML file (if any) with explicit overrides (flags given, or a Python dict);
    every problem (unknown keys, types, values) is reported at once in one ConfigError."""
    values: dict = {}
    problems: list[str] = []
    if path:
        loaded = read_yaml(path, ConfigError)
        problems += unknown_keys(loaded, FIELD_NAMES, f"--config {path}")
        values.update(_resolve_paths(loaded, Path(path).parent))
    given = {k: v for k, v in overrides.items() if v is not None}
    problems += unknown_keys(given, FIELD_NAMES, "build config")
    values.update(given)
    return construct(
        BuildConfig, {k: v for k, v in values.items() if k in FIELD_NAMES}, problems, ConfigError
    )


def _resolve_paths(loaded: dict, base: Path) -> dict:
    """Paths in a config file are relative to the file, as a user reading it would expect."""

    def resolve(value: str) -> str:
        candidate = os.path.normpath(base / value)
        return (
            candidate
            if not Path(value).is_absolute()
            and (Path(candidate).exists() or any(c in value for c in "*?["))
            else value
        )

    out = dict(loaded)
    for name in ("sources", "eval_sources"):
        if name in out:
            items = [out[name]] if isinstance(out[name], str) else out[name]
            if isinstance(items, list):  # anything else is reported by the type check
                out[name] = [_resolve_entry(v, resolve) for v in items]
    for name in ("tokenizer", "chat_template"):
        if isinstance(out.get(name), str) and out[name] != "chatml":
            out[name] = resolve(out[name])
    if isinstance(out.get("out"), str) and not Path(out["out"]).is_absolute():
        out["out"] = os.path.normpath(base / out["out"])
    return out


def _resolve_entry(entry, resolve):
    """A `sources` entry with its path resolved: a string, or a mapping's `path`."""
    if isinstance(entry, str):
        return resolve(entry)
    if isinstance(entry, dict) and isinstance(entry.get("path"), str):
        return {**entry, "path": resolve(entry["path"])}
    return entry


def _marker_problems(response: str | None, instruction: str | None) -> list[str]:
    problems = []
    if instruction is not None and response is None:
        problems.append("--instruction-template needs --response-template")
    if "" in (response, instruction):
        problems.append("--response-template/--instruction-template must not be empty")
    return problems


def _id_marker_problems(config: "BuildConfig") -> list[str]:
    problems = []
    if config.instruction_template_ids and not config.response_template_ids:
        problems.append("--instruction-template-ids needs --response-template-ids")
    if config.response_template_ids and config.response_template is not None:
        problems.append(
            "--response-template and --response-template-ids both given: use one of them"
        )
    if config.instruction_template_ids and config.instruction_template is not None:
        problems.append(
            "--instruction-template and --instruction-template-ids both given: use one of them"
        )
    if any(i < 0 for i in config.response_template_ids + config.instruction_template_ids):
        problems.append(
            "--response-template-ids/--instruction-template-ids must be token ids (0 or more)"
        )
    return problems


def _budget_problems(seconds: float, template_mb: int, text_mb: int) -> list[str]:
    problems = []
    if not seconds > 0:
        problems.append(f"--template-seconds is {seconds}; it must be above 0")
    if template_mb < 1:
        problems.append(f"--template-max-mb is {template_mb}; it must be at least 1")
    if text_mb < 1:
        problems.append(f"--max-text-mb is {text_mb}; it must be at least 1")
    return problems


def _date_problems(text: str | None) -> list[str]:
    try:
        if text is None or (len(text) == 10 and date.fromisoformat(text)):
            return []
    except ValueError:
        pass
    return [f"--template-date is {text!r}; write it as YYYY-MM-DD, e.g. 2026-12-02"]


def _format_problems(flag: str, template: str | None) -> list[str]:
    """A prompt/completion template may hold only plain `{column}` fields: attribute access, indexing,
    conversions and format specs would put Python's text (`<built-in method ...>`) into the data."""
    if template is None:
        return []
    try:
        fields = [
            (f, spec, conv)
            for _, f, spec, conv in string.Formatter().parse(template)
            if f is not None
        ]
    except ValueError as err:
        return [f"{flag} {template!r}: {err}; write a literal brace as {{{{ or }}}}"]
    for name, spec, conversion in fields:
        if not name.isidentifier() or spec or conversion:
            shown = (
                "{"
                + name
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            return [
                f"{flag} {template!r}: field {shown} is not a plain column name; use {{column}} only "
                "(compute anything else with --formatter module:function)"
            ]
    return []


def _count_problems(config: "BuildConfig") -> list[str]:
    """Integers that must not be negative or zero."""
    problems = []
    if config.shard_size_mb < 1:
        problems.append("--shard-size-mb must be at least 1")
    if config.seed < 0:
        problems.append(f"--seed is {config.seed}; it must be 0 or more")
    if config.ray_workers < 0:
        problems.append(
            f"--ray-workers is {config.ray_workers}; it must be 0 (one per CPU) or more"
        )
    if config.engine != "ray":
        problems += [
            f"--{key.replace('_', '-')} needs --engine ray (config `engine: ray`)"
            for key in ("ray_address", "ray_workers")
            if getattr(config, key)
        ]
    return problems
