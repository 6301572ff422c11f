"""Load a tokenizer without transformers (and so without torch): the Rust `tokenizers` backend,
the special tokens and chat template from its config files, and fingerprints of all of it."""

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Tokenizer

from schemas import tokenizer_fingerprint
from schemas.manifest import TokenizerEntry
from sftprep.errors import SftprepError
from sftprep.stages.chat_template import builtin_template
from sftprep.stages.tokenizer_pipeline import AS_SHIPPED, transformers_backend

SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "special_tokens_map.json",
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
CHATML_PAD = "<|pad|>"


@dataclass
class LoadedTokenizer:
    """A tokenizer ready to encode, with what the manifest records about it."""

    backend: Tokenizer
    name_or_path: str
    special_tokens: dict[str, str]
    """bos_token, eos_token, ... as strings (only those that are set); also passed to templates."""
    chat_template: str | None
    chat_template_source: str
    files_sha256: dict[str, str]
    base_fingerprint: str
    added_tokens: list[str] = field(default_factory=list)
    pad_vocab_to_multiple_of: int | None = None
    fingerprint: str = ""
    """Fingerprint after any tokens the build added (set once loading is complete)."""
    pipeline: str = AS_SHIPPED
    """Which pipeline encodes: tokenizer.json as shipped, or transformers 5's rebuild of it."""
    fast: object = None
    """The fast encoder (a fast_encoder.LazyFast) when the build uses it, else None."""
    encoder: str = "hf"
    """Which encoder the build uses: hf or fastokens."""
    encoder_version: str = ""
    """The version of that encoder's package."""

    def token_id(self, key: str) -> int | None:
        """Id of the special token `key` (e.g. 'eos_token'), or None when it is not set."""
        token = self.special_tokens.get(key)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def length(self) -> int:
        """Number of distinct ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def manifest_entry(self, encoded_by: Counter | None = None) -> TokenizerEntry:
        """What the manifest records under `tokenizer`; `encoded_by`: rows per encoder
        (fastokens, hf, hf-fallback: rows the fast encoder handed to HF)."""
        encoded_by = encoded_by or Counter()
        fast = encoded_by["fastokens"] > 0
        template = self.chat_template
        return TokenizerEntry(
            name_or_path=self.name_or_path,
            fingerprint=self.fingerprint,
            base_fingerprint=self.base_fingerprint,
            files_sha256=self.files_sha256,
            chat_template_sha256=None if template is None else _sha256(template.encode()),
            chat_template_source=self.chat_template_source,
            chat_template=template,
            special_tokens=self.special_tokens,
            length=self.length,
            bos_id=self.token_id("bos_token"),
            eos_id=self.token_id("eos_token"),
            pad_id=self.token_id("pad_token"),
            added_tokens=tuple(self.added_tokens),
            pad_vocab_to_multiple_of=self.pad_vocab_to_multiple_of,
            pipeline=self.pipeline,
            encoder="fastokens" if fast else "hf",
            encoder_version=self.encoder_version if fast else tokenizers.__version__,
            encoder_fallback_rows=encoded_by["hf-fallback"],
            encoder_hf_rows=encoded_by["hf"] + encoded_by["hf-fallback"],
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def _resolve_folder(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise SftprepError(
                f"--tokenizer {name_or_path}: no tokenizer.json in this folder; sftprep needs a fast tokenizer "
                "(save one with transformers: AutoTokenizer.from_pretrained(...).save_pretrained(DIR))"
            )
        return path
    if path.exists():
        raise SftprepError(f"--tokenizer {name_or_path}: expected a folder holding tokenizer.json")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(name_or_path, allow_patterns=list(TOKENIZER_FILES))
    except Exception as err:  # offline, unknown repo, no auth: all the same to the user
        raise SftprepError(
            f"--tokenizer {name_or_path}: not a local folder, and it could not be fetched from the hub "
            f"({type(err).__name__}); pass the path of a folder holding tokenizer.json"
        ) from None
    return Path(local)


def load_tokenizer(
    name_or_path: str, chat_template: str | None = None, pad_vocab_to_multiple_of: int | None = None
) -> LoadedTokenizer:
    """Load a tokenizer folder (or hub name), apply `--chat-template` (a file, or `chatml`)."""
    folder = _resolve_folder(name_or_path)
    files = {n: (folder / n).read_bytes() for n in TOKENIZER_FILES if (folder / n).is_file()}
    config = _json_object(folder, files, "tokenizer_config.json")
    try:
        backend, pipeline = transformers_backend(files["tokenizer.json"], config)
    except Exception as err:  # noqa: BLE001 - the Rust parser's errors have no common type
        raise SftprepError(
            f"{folder / 'tokenizer.json'}: not a tokenizer file that loads ({str(err)[:120]}); "
            "save the tokenizer again (AutoTokenizer.from_pretrained(...).save_pretrained(DIR))"
        ) from None
    special_map = _json_object(folder, files, "special_tokens_map.json")
    special = {}
    for key in SPECIAL_TOKEN_KEYS:
        text = _token_text(config.get(key, special_map.get(key)))
        if text is not None and not isinstance(text, str):
            raise SftprepError(
                f"{folder / 'tokenizer_config.json'}: `{key}` is {text!r}; it must be the token's text"
            )
        if text is not None:
            special[key] = text
    template, source = _own_template(config, files, folder)
    loaded = LoadedTokenizer(
        backend=backend,
        name_or_path=str(folder.resolve()) if Path(name_or_path).is_dir() else str(name_or_path),
        special_tokens=special,
        chat_template=template,
        chat_template_source=source,
        files_sha256={n: _sha256(b) for n, b in sorted(files.items())},
        base_fingerprint=tokenizer_fingerprint(backend),
        pad_vocab_to_multiple_of=pad_vocab_to_multiple_of,
        pipeline=pipeline,
    )
    if chat_template == "chatml":
        _setup_chatml(loaded)
    elif chat_template:
        path = Path(chat_template)
        if not path.is_file():
            raise SftprepError(
                f"--chat-template {chat_template}: file not found (or pass `chatml`)"
            )
        loaded.chat_template = _template_text(path.read_bytes(), path)
        loaded.chat_template_source = f"file:{path.name}"
    _require_special_in_vocab(loaded, folder)
    loaded.fingerprint = (
        tokenizer_fingerprint(loaded.backend) if loaded.added_tokens else loaded.base_fingerprint
    )
    return loaded


def _json_object(folder: Path, files: dict, name: str) -> dict:
    """A config file of the folder as a dict ({} when absent); a one-line error when it is not one."""
    if name not in files:
        return {}
    try:
        value = json.loads(files[name])
    except ValueError as err:
        raise SftprepError(
            f"{folder / name}: not valid JSON ({err}); fix or remove the file"
        ) from None
    if not isinstance(value, dict):
        raise SftprepError(
            f"{folder / name}: holds a {type(value).__name__}, not a JSON object; fix or remove the file"
        )
    return value


def _require_special_in_vocab(loaded: LoadedTokenizer, folder: Path) -> None:
    """BOS and EOS must be tokens of the vocabulary: else examples would silently go without them."""
    for key in ("bos_token", "eos_token"):
        text = loaded.special_tokens.get(key)
        if text is not None and loaded.backend.token_to_id(text) is None:
            raise SftprepError(
                f"{folder / 'tokenizer_config.json'}: `{key}` is {text!r}, which is not a token of "
                "tokenizer.json; set it to a token the vocabulary has (or remove it)"
            )


def _template_text(data: bytes, path: Path) -> str:
    """A template file's text: UTF-8, with a byte-order mark dropped (it would start every example)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SftprepError(
            f"{path}: the chat template is not UTF-8 (byte {err.start}); save it as UTF-8"
        ) from None


def _own_template(config: dict, files: dict, folder: Path) -> tuple[str | None, str]:
    """The tokenizer's own chat template: chat_template.jinja wins, as in transformers 5."""
    if "chat_template.jinja" in files:
        text = _template_text(files["chat_template.jinja"], folder / "chat_template.jinja")
        return text, "tokenizer:chat_template.jinja"
    where = folder / "tokenizer_config.json"
    template = config.get("chat_template")
    if template is None and "chat_template.json" in files:
        where = folder / "chat_template.json"
        template = _json_object(folder, files, "chat_template.json").get("chat_template")
    if isinstance(template, list):  # named templates: use "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if None in named:
            raise SftprepError(f"{where}: a named chat template has no `name`; name each one")
        template = named.get("default")
    if template is not None and not isinstance(template, str):
        raise SftprepError(
            f"{where}: `chat_template` is a {type(template).__name__}, not a template string; fix the file"
        )
    return template, "tokenizer:tokenizer_config.json" if template else "none"


def _setup_chatml(loaded: LoadedTokenizer) -> None:
    """Set up ChatML as TRL's setup_chat_format does, but keep pad distinct from eos."""
    vocab = loaded.backend.get_vocab(with_added_tokens=True)
    new = [t for t in CHATML_TOKENS if t not in vocab]
    pad = loaded.special_tokens.get("pad_token")
    if pad is None or pad == CHATML_TOKENS[1] or loaded.backend.token_to_id(pad) is None:
        pad = CHATML_PAD
        if pad not in vocab:
            new.append(pad)
    if new:
        loaded.backend.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in new]
        )
    loaded.added_tokens = new
    loaded.special_tokens.update(
        bos_token=CHATML_TOKENS[0], eos_token=CHATML_TOKENS[1], pad_token=pad
    )
    loaded.chat_template = builtin_template("chatml")
    loaded.chat_template_source = "builtin:chatml"
