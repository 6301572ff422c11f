"""Ids and masks with a character-level tokenizer, where every expected id and mask bit is written
by hand: 1 exactly on what the model must generate (assistant content and its end-of-turn marker)."""

import dataclasses

import numpy as np

from sftprep.stages.formats import FormatSpec
from sftprep.stages.masks import token_range
from sftprep.stages.row_encoder import RowEncoder
from tests.sftprep.stages.char_tokenizer import ids, special_id

CHAT = {
    "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "ok?"},
        {"role": "assistant", "content": "no"},
    ]
}
SPEC = FormatSpec("messages", {"messages": "messages", "tools": "tools"})


def encode(tokenizer, row, loss_on="assistant", spec=SPEC):
    spec = dataclasses.replace(spec, loss_on=loss_on)
    [(_, encoded)] = RowEncoder(tokenizer, True).process(spec, [(0, row)])
    return encoded


def trained_text(encoded, tokenizer) -> list[str]:
    backend = tokenizer.backend
    return [backend.id_to_token(int(i)) for i, m in zip(encoded.input_ids, encoded.loss_mask) if m]


def test_chat_ids_are_the_rendered_characters_and_the_mask_is_each_answer_with_its_end(
    char_tokenizer,
):
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>user\nok?<|im_end|>\n<|im_start|>assistant\nno<|im_end|>\n"
    encoded = encode(char_tokenizer, CHAT)
    assert encoded.input_ids.tolist() == ids(text)
    assert trained_text(encoded, char_tokenizer) == ["y", "o", "<|im_end|>", "n", "o", "<|im_end|>"]
    end = special_id("<|im_end|>")
    trained_at = np.flatnonzero(encoded.loss_mask).tolist()
    assert [encoded.input_ids[i] for i in trained_at[2::3]] == [
        end,
        end,
    ]  # every answer ends trained
    assert encoded.loss_tokens == 6 and encoded.loss_mask[0] == 0


def test_last_assistant_and_all(char_tokenizer):
    last = encode(char_tokenizer, CHAT, "last-assistant")
    assert trained_text(last, char_tokenizer) == ["n", "o", "<|im_end|>"]
    everything = encode(char_tokenizer, CHAT, "all")
    assert everything.loss_mask.tolist() == [0] + [1] * (
        len(everything.input_ids) - 1
    )  # all: every token


def test_text_trains_every_token_but_the_first_and_appends_eos_once(char_tokenizer):
    spec = FormatSpec("text", {"text": "text"})
    encoded = encode(char_tokenizer, {"text": "abc"}, spec=spec)
    assert encoded.input_ids.tolist() == ids("abc") + [special_id("<|im_end|>")]
    assert encoded.loss_mask.tolist() == [0, 1, 1, 1]
    already = encode(char_tokenizer, {"text": "abc<|im_end|>"}, spec=spec)
    assert already.input_ids.tolist() == encoded.input_ids.tolist()  # never a second EOS


def test_token_range_maps_characters_to_the_tokens_overlapping_them(char_tokenizer):
    enc = char_tokenizer.backend.encode("ab<|im_end|>cd", add_special_tokens=False)
    assert token_range(enc, 0, 2) == (0, 2)
    assert token_range(enc, 1, 3) == (1, 3)  # a span that ends inside the marker takes all of it
    assert token_range(enc, 2, 12) == (2, 3) and token_range(enc, 12, 14) == (3, 5)
    assert token_range(enc, 14, 20) is None
