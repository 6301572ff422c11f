"""Typed config dataclasses, shared by both stages: type checks, YAML reading, CLI options.

A stage's config is a frozen dataclass whose fields carry a type annotation, a default and a
docstring (the string literal under the field). From that one declaration come:

- `type_problems(config)`: every field checked against its annotation by pydantic in strict
  mode (`max_length: "abc"` or `seed: 1.5` are errors, an int where a float is expected is fine),
  one line per bad key, e.g. ``max_length (--max-length): expected an integer, got 'abc'``;
- `read_yaml(path, ...)`: a YAML file of config keys, unknown keys reported with the known ones;
- `cli_parameters(cls, ...)`: one typer option per field (bool as --x/--no-x, tuples as
  repeatable options, dicts as JSON text), help from the docstring, defaults shown from the field.

Per-source settings can be a union annotation (`tuple[str | SourceSpec, ...]`): the checker
validates any annotation pydantic understands. Imports neither torch nor transformers.
"""

import ast
import dataclasses
import inspect
import itertools
import json
import re
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

import yaml

EXPECTED = {  # pydantic error type -> what the key needed, in words
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "none_required": "null",
}


class ConfigProblems(Exception):
    """Base of each stage's ConfigError: every problem of a config, one line each."""

    title = "invalid config"

    def __init__(
        self, message: str, problems: list[str] | None = None, bad_keys: set | None = None
    ):
        self.problems = problems if problems is not None else [message]
        self.bad_keys = bad_keys or set()
        """Config keys whose value had the wrong type."""
        super().__init__(message)

    def __reduce__(self):
        return type(self), (str(self), self.problems, self.bad_keys)

    @classmethod
    def listing(cls, problems: list[str], bad_keys: set | None = None) -> "ConfigProblems":
        """One error listing every problem, one per line."""
        return cls(f"{cls.title}:\n  - " + "\n  - ".join(problems), problems, bad_keys)


def check_types(config, error: type[ConfigProblems]) -> None:
    """For __post_init__: normalize sequences, then raise `error` listing every mistyped field."""
    normalize_sequences(config)
    problems = type_problems(config)
    if problems:
        raise error.listing(list(problems.values()), bad_keys=set(problems))


def construct(cls: type, values: dict, problems: list[str], error: type[ConfigProblems]):
    """`cls(**values)`, raising one `error` with `problems` (e.g. unknown keys), every type problem
    and every value problem (`cls.value_problems`), all at once. Fields with a wrong type are
    replaced by their defaults to check the rest, and are not then reported as missing."""
    try:
        config, mistyped = cls(**values), frozenset()
    except error as err:
        problems = problems + err.problems
        mistyped = frozenset(err.bad_keys)
        config = cls(**{k: v for k, v in values.items() if k not in mistyped})
    problems = problems + config.value_problems(mistyped)
    if problems:
        raise error.listing(problems)
    return config


def flag(name: str) -> str:
    """The CLI flag of a config key: learning_rate -> --learning-rate."""
    return "--" + name.replace("_", "-")


def field_flag(field: dataclasses.Field) -> str:
    """A field's flag: `metadata={"flag": "--eval"}` when its name is not the flag."""
    return field.metadata.get("flag", flag(field.name))


def normalize_sequences(config) -> None:
    """In __post_init__: a list (from YAML or JSON) for a tuple field becomes a tuple, and a lone
    string becomes a one-item tuple (`sources: data.jsonl`), so a frozen config holds no list."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if typing.get_origin(_hints(type(config))[field.name]) is tuple:
            if isinstance(value, list):
                object.__setattr__(config, field.name, tuple(value))
            elif isinstance(value, str):
                object.__setattr__(config, field.name, (value,))


def type_problems(config) -> dict[str, str]:
    """field name -> one line, for each field whose value does not fit its annotation (strict: no
    silent coercion)."""
    import pydantic

    problems = {}
    hints = _hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        try:
            _adapter(hints[field.name]).validate_python(value)
        except pydantic.ValidationError as err:
            problems[field.name] = _describe(
                field, value, err.errors(), type(None) in typing.get_args(hints[field.name])
            )
    return problems


class _Yaml12Numbers(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-5` and `2e-4` (no dot) are strings; users write learning
    rates that way everywhere, and YAML 1.2 reads them as numbers: so do we. Quoted "1e-5" stays
    a string (and is then a type error for a float key)."""


_Yaml12Numbers.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(path: str | Path, error: type[Exception]) -> dict:
    """The mapping in a YAML config file; `error` for a missing file, bad YAML or not a mapping."""
    path = Path(path)
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Numbers) or {}  # noqa: S506 - a SafeLoader
    except (FileNotFoundError, IsADirectoryError):
        raise error(f"--config {path}: file not found") from None
    except UnicodeDecodeError as err:
        raise error(
            f"--config {path}: not UTF-8 text (byte {err.start}); save it as UTF-8 YAML"
        ) from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise error(f"--config {path}: not valid YAML{at}; fix the file") from None
    if not isinstance(loaded, dict):
        raise error(
            f"--config {path}: expected a mapping of config keys to values, got {type(loaded).__name__}"
        )
    return loaded


def unknown_keys(values: dict, known: list[str], where: str, hint: str = "") -> list[str]:
    """One problem naming the keys of `values` that are not config keys (none when all are)."""
    unknown = sorted(str(k) for k in set(values) - set(known))
    if not unknown:
        return []
    return [f"{where}: unknown key(s) {', '.join(unknown)}{hint}; known keys: {', '.join(known)}"]


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal right under it), read from the class source."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    return {
        node.target.id: " ".join(nxt.value.value.split())
        for node, nxt in itertools.pairwise(body)
        if isinstance(node, ast.AnnAssign)
        and isinstance(nxt, ast.Expr)
        and isinstance(nxt.value, ast.Constant)
    }


def default_of(field: dataclasses.Field) -> Any:
    """A field's default value (calling its default_factory)."""
    return (
        field.default_factory()
        if field.default_factory is not dataclasses.MISSING
        else field.default
    )


def cli_parameters(cls: type, positional: str | None = None) -> list[inspect.Parameter]:
    """Keyword-only typer parameters, one per field, each defaulting to None ("not given"), so that
    only the flags a user typed override the config file. `positional` names the field taken as
    the command's arguments (e.g. the build's SOURCE...)."""
    import typer

    docs, hints, params = field_docs(cls), _hints(cls), []
    for field in dataclasses.fields(cls):
        kind, choices = _cli_type(hints[field.name])
        default = default_of(field)
        help_text = docs.get(field.name, "")
        if choices:
            help_text += f" One of: {', '.join(choices)}."
        if kind is dict:
            help_text += " (JSON)"
            kind, default = str, json.dumps(default)
        if field.name == positional:
            option = typer.Argument(
                metavar=field.metadata.get("metavar", field.name.upper() + "..."),
                help=help_text,
                show_default=False,
            )
        else:
            names = field_flag(field)
            if kind is bool:
                names = f"{names}/--no-{names[2:]}"
            shown = f" [default: {default}]" if default not in (None, (), "") else ""
            option = typer.Option(names, help=help_text + shown, show_default=False)
        annotation = typing.Annotated[kind | None, option]
        params.append(
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
            )
        )
    return params


def config_file_parameter() -> inspect.Parameter:
    """The `--config FILE` option both CLIs take before their generated ones."""
    import typer

    option = typer.Option("--config", help="YAML file of config keys; flags override it.")
    return inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=typing.Annotated[Path | None, option],
    )


@cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


@cache
def _adapter(annotation):
    import pydantic

    return pydantic.TypeAdapter(annotation, config=pydantic.ConfigDict(strict=True))


def _describe(field: dataclasses.Field, value: Any, errors: list[dict], nullable: bool) -> str:
    """`key (--flag): expected X, got V` from pydantic's errors (a union gives one per member)."""
    head = f"{field.name} ({field_flag(field)})"
    for err in errors:
        if err["type"] == "literal_error":
            choices = err["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
            return f"{head}: expected one of {choices}, got {value!r}"
    item = next((e for e in errors if e["loc"] and isinstance(e["loc"][0], int)), None)
    if item is not None:  # one bad entry of a list (of a union: one error per member)
        index = item["loc"][0]
        wanted = " or ".join(
            sorted(
                {
                    EXPECTED.get(e["type"], e["msg"].lower())
                    for e in errors
                    if e["loc"][:1] == (index,)
                }
            )
        )
        return (
            f"{field.name}[{index}] ({field_flag(field)}): expected {wanted}, got {item['input']!r}"
        )
    wanted = sorted(
        {EXPECTED.get(e["type"], e["msg"].lower()) for e in errors}
        | ({"null"} if nullable else set()),
        key=lambda w: w == "null",
    )
    return f"{head}: expected {' or '.join(wanted)}, got {value!r}"


def _cli_type(annotation) -> tuple[type, tuple]:
    """The flag's Python type (bool, int, float, str, list[str] or dict) and its choices, if any."""
    origin = typing.get_origin(annotation)
    members = (
        typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    )
    for member in (m for m in members if m is not type(None)):
        kind = typing.get_origin(member) or member
        if kind is typing.Literal:
            return str, typing.get_args(member)
        if kind is tuple:
            return list[str], ()
        if kind is dict:
            return dict, ()
        if kind in (bool, int, float, str):
            return kind, ()
    return str, ()


def json_flag(value: Any, flag_name: str, error: type[Exception]) -> Any:
    """A dict-typed flag's value: JSON text parsed to an object (a dict from YAML passes as is);
    `error` naming the flag for anything else."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise error(f"{flag_name} must be a JSON object, e.g. '{{\"key\": 1}}': {e}") from None
    if not isinstance(parsed, dict):
        raise error(f"{flag_name} must be a JSON object, got {value}")
    return parsed
