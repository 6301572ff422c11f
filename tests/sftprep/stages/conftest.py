"""The character-level tokenizer, loaded by sftprep's own loader, for exact unit tests."""

import pytest

from sftprep.stages.tokenizer import load_tokenizer
from tests.sftprep.stages.char_tokenizer import write_char_tokenizer


@pytest.fixture(scope="session")
def char_tokenizer(tmp_path_factory):
    return load_tokenizer(str(write_char_tokenizer(tmp_path_factory.mktemp("char") / "tok")))
