"""A character-level tokenizer for exact unit tests: one token per character (id = its position
in CHARS), ChatML's two markers as whole special tokens, so expected ids and masks can be written
by hand. Saved as a tokenizer folder that sftprep's own loader reads."""

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Split

CHARS = "\n abcdefghijklmnopqrstuvwxyz?!.,:'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<>|_"
SPECIALS = ("<|im_start|>", "<|im_end|>", "<unk>")
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def char_id(c: str) -> int:
    return CHARS.index(c)


def special_id(token: str) -> int:
    return len(CHARS) + SPECIALS.index(token)


def ids(text: str) -> list[int]:
    """Hand-made ids of a text: one per character, the ChatML markers as one id each."""
    out, i = [], 0
    while i < len(text):
        token = next((s for s in SPECIALS[:2] if text.startswith(s, i)), None)
        out.append(special_id(token) if token else char_id(text[i]))
        i += len(token) if token else 1
    return out


def write_char_tokenizer(folder: Path) -> Path:
    """tokenizer.json + tokenizer_config.json (ChatML template, EOS <|im_end|>) in `folder`."""
    vocab = {c: i for i, c in enumerate(CHARS)} | {
        s: len(CHARS) + i for i, s in enumerate(SPECIALS)
    }
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Split("", behavior="isolated")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"eos_token": "<|im_end|>", "unk_token": "<unk>", "chat_template": CHATML}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
