"""Per-source settings: an entry of `sources` (or `eval_sources`) is a path, or a mapping with
`path` plus keys that override the global config for that source only, and how much of the
source the mixture takes.

    sources:
      - data/chat.jsonl                      # global settings
      - path: data/alpaca.json
        system_prompt: You are terse.        # prepended when a conversation has none
        fraction: 0.25                       # a seeded, stable quarter of its rows
      - path: data/notes.csv
        prompt_template: "Q: {question}\\nA:"
        completion_template: " {answer}"
        take: 500                            # the first 500 rows kept
      - path: data/gold.jsonl
        repeat: 3                            # every row three times, as distinct examples
      - path: HuggingFaceH4/no_robots        # a hub dataset: its own subset, split, revision
        split: test

Mixture keys (at most one per source): `take: N` keeps the first N rows that survive the checks
(reading stops there; fewer is an error), or with `sample: true` N of them drawn by a seeded hash
(the whole source is encoded, then the N rows of smallest hash are kept); `fraction: f` keeps each
row whose hash of (seed, the file's content sha256, row index) falls under f, so the same rows are
chosen whatever else changes; `repeat: R` keeps every row R times with ids of their own; under the
global `mix: tokens`, `weight: w` sets the source's share of the split's trained tokens
(stages/mixture.py).
"""

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from sftprep.errors import ConfigError

FORMAT_KEYS = (
    "format",
    "text_field",
    "messages_field",
    "prompt_field",
    "completion_field",
    "prompt_template",
    "completion_template",
    "formatter",
    "loss_on",
    "system_prompt",
    "response_template",
    "instruction_template",
    "response_template_ids",
    "instruction_template_ids",
    "chat_template_kwargs",
    "reasoning",
)
"""Global config keys a source may set for itself."""
MIX_KEYS = ("take", "fraction", "repeat", "weight")
"""How much of the source the build takes (at most one)."""
HUB_KEYS = ("name", "split", "revision", "data_files")
"""datasets.load_dataset arguments of a hub source (`name` is the subset)."""
KNOWN_KEYS = ("path", *FORMAT_KEYS, *MIX_KEYS, "sample", *HUB_KEYS)


@dataclass(frozen=True)
class Mixture:
    """What the mixture takes of one source."""

    take: int | None = None
    fraction: float | None = None
    repeat: int = 1
    weight: float | None = None
    sample: bool = False
    """With take: N rows drawn by seeded hash, not the first N."""

    @property
    def chosen_after_encoding(self) -> bool:
        """Whether the rows kept are chosen once the whole source is encoded (stages/mixture.py)."""
        return self.sample or self.weight is not None


def entry_path(entry: str | dict) -> str:
    """The path (file, glob, folder or hub name) of a `sources` entry."""
    return entry if isinstance(entry, str) else entry["path"]


def entry_settings(entry: str | dict) -> dict:
    """The per-source keys of an entry (none for a plain path)."""
    return {} if isinstance(entry, str) else {k: v for k, v in entry.items() if k != "path"}


def source_config(config, settings: dict):
    """The global config with a source's own format keys applied."""
    own = {k: settings[k] for k in FORMAT_KEYS if k in settings}
    return dataclasses.replace(config, **own) if own else config


def mixture(settings: dict) -> Mixture:
    """The mixture keys of a source's settings."""
    return Mixture(**{k: settings[k] for k in (*MIX_KEYS, "sample") if k in settings})


def hub_arguments(settings: dict) -> dict:
    """The load_dataset keyword arguments of a hub source (split `train` unless given)."""
    return {"split": "train", **{k: settings[k] for k in HUB_KEYS if k in settings}}


def fraction_filter(fraction: float, seed: int, content_sha256: str) -> Callable[[int], bool]:
    """Whether row i is in the seeded, stable `fraction` of a source (by hash, not by position)."""
    bound = int(fraction * (1 << 64))

    def chosen(row: int) -> bool:
        digest = hashlib.blake2b(f"{seed}:{content_sha256}:{row}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big") < bound

    return chosen


def entry_problems(config, key: str) -> list[str]:
    """Problems of the mapping entries of `config.<key>`, one line each, naming the entry and the key."""
    problems = []
    everywhere = None  # the global problems, computed once, not reported again per source
    for i, entry in enumerate(getattr(config, key)):
        if isinstance(entry, str):
            if config.mix == "tokens" and key == "sources":
                problems.append(
                    f"{key}[{i}] ({entry}): mix tokens needs a weight for every source; write it "
                    "as a mapping with path and weight"
                )
            continue
        path = entry.get("path")
        where = f"{key}[{i}]" + (f" ({path})" if isinstance(path, str) else "")
        if not isinstance(path, str) or not path:
            problems.append(
                f"{where}: a source mapping needs `path`, the file, glob or dataset name"
            )
        unknown = [k for k in entry if k not in KNOWN_KEYS]
        if unknown:
            problems.append(
                f"{where}: unknown key {', '.join(map(repr, unknown))}; a source may set "
                f"{', '.join(KNOWN_KEYS[1:])}"
            )
        problems += [f"{where}: {p}" for p in _mix_problems(entry)]
        problems += [f"{where}: {p}" for p in _weight_problems(config, key, entry)]
        problems += [f"{where}: {p}" for p in _hub_problems(entry)]
        if everywhere is None and any(k in entry for k in FORMAT_KEYS):
            everywhere = set(
                dataclasses.replace(config, sources=("-",), eval_sources=()).value_problems()
            )
        problems += [f"{where}: {p}" for p in _format_problems(config, entry, everywhere)]
    return problems


def _mix_problems(entry: dict) -> list[str]:
    asked = [k for k in MIX_KEYS if k in entry]
    if len(asked) > 1:
        return [
            f"{' and '.join(asked)} both given: a source takes at most one of {', '.join(MIX_KEYS)}"
        ]
    if "sample" in entry and asked != ["take"]:
        return ["sample goes with take (take: N, sample: true); remove it or add take"]
    if "sample" in entry and not isinstance(entry["sample"], bool):
        return [f"sample is {entry['sample']!r}; it must be true or false"]
    if not asked:
        return []
    name, value = asked[0], entry[asked[0]]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "fraction":
        ok = number and 0 < value <= 1
        return [] if ok else [f"fraction is {value!r}; it must be a number in (0, 1]"]
    if name == "weight":
        ok = number and 0 < value < float("inf")
        return [] if ok else [f"weight is {value!r}; it must be a positive number"]
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return [] if ok else [f"{name} is {value!r}; it must be a whole number of at least 1"]


def _weight_problems(config, key: str, entry: dict) -> list[str]:
    """`weight` goes with the global `mix: tokens`, on every training source, never on eval."""
    if key == "eval_sources":
        return ["weight: the eval split is not mixed; remove it"] if "weight" in entry else []
    if "weight" not in entry:
        return (
            [
                "mix tokens needs a weight for every source (take, fraction and repeat do not "
                "combine with it); add weight"
            ]
            if config.mix == "tokens"
            else []
        )
    if config.mix != "tokens":
        return ["weight needs the global mix: tokens (config `mix`); add it, or remove weight"]
    return []


def _hub_problems(entry: dict) -> list[str]:
    """The hub keys' types: strings, and data_files a string, list of strings or split mapping."""
    problems = [
        f"{k} is {entry[k]!r}; it must be a string"
        for k in ("name", "split", "revision")
        if k in entry and not isinstance(entry[k], str)
    ]
    files = entry.get("data_files", "")
    flat = list(files.values()) if isinstance(files, dict) else [files]
    flat = [f for v in flat for f in (v if isinstance(v, list) else [v])]
    if not all(isinstance(f, str) for f in flat):
        problems.append(
            f"data_files is {files!r}; give a path, a list of paths or a mapping of split to paths"
        )
    return problems


def _format_problems(config, entry: dict, everywhere: set) -> list[str]:
    """The source's format keys checked as the global config checks them (types and values)."""
    own = {k: entry[k] for k in FORMAT_KEYS if k in entry}
    if not own:
        return []
    try:
        effective = dataclasses.replace(config, sources=("-",), eval_sources=(), **own)
    except ConfigError as err:  # a key of the wrong type
        return [p for p in err.problems if p.split(" ", 1)[0] in own]
    return [p for p in effective.value_problems() if p not in everywhere]
