"""The two stages together, as a user runs them: sftprep builds, sfttrain trains on that build."""

import json

import sftprep
import sfttrain
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES


def test_build_then_train_then_trace_the_data(tmp_path):
    build = tmp_path / "build"
    manifest = sftprep.build(
        {
            "sources": [
                str(EXAMPLES / "data" / "chat.jsonl"),
                str(EXAMPLES / "data" / "alpaca.json"),
            ],
            "tokenizer": str(BUNDLED_TOKENIZER),
            "out": str(build),
            "max_length": 256,
            "eval_fraction": 0.2,
            "num_proc": 1,
        }
    )
    result = sfttrain.train(
        {
            "data": str(build),
            "model": str(EXAMPLES / "tiny-llama"),
            "random_init": True,
            "tokenizer": str(BUNDLED_TOKENIZER),
            "output_dir": str(tmp_path / "run"),
            "max_steps": 12,
            "learning_rate": 3e-3,
            "logging_steps": 1,
            "report_to": "none",
        }
    )
    assert result.last_loss < result.first_loss
    copied = json.loads((tmp_path / "run" / "sftprep_manifest.json").read_text())
    assert copied["fingerprint"] == manifest["fingerprint"]
    assert (tmp_path / "run" / "config.json").is_file() and (
        tmp_path / "run" / "tokenizer.json"
    ).is_file()
