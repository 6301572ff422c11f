"""The build config: one typed, validated place for every option and its default.

CLI flags and YAML keys map onto the same fields (flag `--max-length` is key `max_length`); flags
override the file.
"""

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from sftprep.errors import SftprepError

FORMATS = ("auto", "text", "messages", "prompt-completion")
LOSS_POLICIES = ("assistant", "last-assistant", "all")
PACKINGS = ("bfd", "wrapped", "none")
OVERLONG = ("truncate", "drop", "split")
TRUNCATION_SIDES = ("right", "left")
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides what `sftprep build` writes."""

    sources: tuple[str, ...] = ()
    """Training data: files (JSON, JSONL, Parquet, CSV, Arrow), globs, save_to_disk folders or hub names."""
    tokenizer: str = ""
    """Tokenizer folder (tokenizer.json + tokenizer_config.json) or hub name."""
    out: str = ""
    """Build folder to write (created atomically)."""
    eval_sources: tuple[str, ...] = ()
    """Sources of the eval split (`--eval`); exclusive with eval_fraction."""
    eval_fraction: float = 0.0
    """Fraction of the training examples held out as the eval split, chosen by a seeded hash."""
    format: str = "auto"
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
    """Python format string over any columns making the prompt, e.g. '### Q: {question}\\n### A:'."""
    completion_template: str | None = None
    """Format string making the completion, e.g. ' {answer}'; needs prompt_template."""
    formatter: str | None = None
    """`module:function` called on each row; returns text, {prompt, completion} or messages."""
    chat_template: str | None = None
    """Jinja file overriding the tokenizer's template, or `chatml` to set up ChatML."""
    pad_vocab_to_multiple_of: int | None = None
    """With added tokens (chatml), ask the trainer to resize embeddings to a multiple of this."""
    loss_on: str = "assistant"
    """assistant | last-assistant | all. A message's own `train: true/false` overrides it."""
    max_length: int = 2048
    """Tokens per row."""
    packing: str = "bfd"
    """bfd | wrapped | none."""
    overlong: str = "truncate"
    """What to do with an example longer than max_length: truncate | drop | split."""
    truncation_side: str = "right"
    """right keeps the start of an overlong example, left keeps its end."""
    concat_token: bool = True
    """wrapped packing: put EOS between documents."""
    special_tokens: bool = True
    """text format: let the tokenizer add its special tokens (BOS) and append EOS."""
    seed: int = 0
    """Seeds the eval split and the order of rows."""
    on_error: str = "raise"
    """raise: stop at the first bad row. skip: drop it and count it by reason."""
    shard_size_mb: int = 256
    """Approximate size of one shard file."""
    num_proc: int = 0
    """Worker processes (0 = all cores). The output does not depend on it."""
    overwrite: bool = False
    """Replace a different build already in `out`."""

    def validate(self) -> "BuildConfig":
        """Check every field at once; raise one SftprepError listing all problems."""
        problems = []

        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                flag = "--" + name.replace("_", "-")
                problems.append(f"{flag} (config `{name}`) is {value!r}; choose one of {', '.join(allowed)}")

        choice("format", FORMATS)
        choice("loss_on", LOSS_POLICIES)
        choice("packing", PACKINGS)
        choice("overlong", OVERLONG)
        choice("truncation_side", TRUNCATION_SIDES)
        choice("on_error", ON_ERROR)
        if not self.sources:
            problems.append("no SOURCE given: pass at least one data file, folder or dataset name")
        if not self.tokenizer:
            problems.append("--tokenizer (config `tokenizer`) is required")
        if not self.out:
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
        if self.shard_size_mb < 1:
            problems.append("--shard-size-mb must be at least 1")
        if problems:
            raise SftprepError("invalid build config:\n  - " + "\n  - ".join(problems))
        return self

    def to_dict(self) -> dict:
        """All fields as plain JSON values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


FIELD_NAMES = tuple(f.name for f in fields(BuildConfig))
LIST_FIELDS = ("sources", "eval_sources")


def load_config(path: str | None, overrides: dict) -> BuildConfig:
    """Merge a YAML file (if any) with explicit overrides (flags given on the command line)."""
    values: dict = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise SftprepError(f"--config {path}: file not found") from None
        except yaml.YAMLError as err:
            raise SftprepError(f"--config {path}: not valid YAML ({err})") from None
        if not isinstance(loaded, dict):
            raise SftprepError(f"--config {path}: expected a mapping of option names to values")
        unknown = sorted(set(loaded) - set(FIELD_NAMES))
        if unknown:
            raise SftprepError(
                f"--config {path}: unknown keys {', '.join(unknown)}; known keys: {', '.join(FIELD_NAMES)}"
            )
        base = Path(path).parent
        values.update(_resolve_paths(loaded, base))
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name in LIST_FIELDS:
        if name in values and isinstance(values[name], str):
            values[name] = (values[name],)
        if name in values:
            values[name] = tuple(values[name])
    return BuildConfig(**values).validate()


def _resolve_paths(loaded: dict, base: Path) -> dict:
    """Paths in a config file are relative to the file, as a user reading it would expect."""

    def resolve(value: str) -> str:
        candidate = os.path.normpath(base / value)
        return candidate if not Path(value).is_absolute() and (Path(candidate).exists() or any(c in value for c in "*?[")) else value

    out = dict(loaded)
    for name in ("sources", "eval_sources"):
        if name in out:
            items = [out[name]] if isinstance(out[name], str) else out[name]
            out[name] = [resolve(v) for v in items]
    for name in ("tokenizer", "chat_template"):
        if isinstance(out.get(name), str) and out[name] != "chatml":
            out[name] = resolve(out[name])
    if isinstance(out.get("out"), str) and not Path(out["out"]).is_absolute():
        out["out"] = os.path.normpath(base / out["out"])
    return out
