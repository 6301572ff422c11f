"""bench/train_speed.py --tiny runs on CPU and reports what the GPU run reports."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_train_speed_tiny(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        str(REPO / "bench" / "train_speed.py"),
        "--tiny",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["checks"]["bf16"]["finite"] and results["checks"]["bf16"]["steps"] == 1
    assert "skipped" in results["checks"]["qlora"] or results["checks"]["qlora"]["finite"]
    speed = results["speed"]
    assert results["speed_setup"]["real_tokens"] > 0
    assert "skipped" in speed["sfttrain_flash"] or speed["sfttrain_flash"]["tokens_per_second"] > 0
    for name in ("sfttrain_sdpa", "trl_padded", "trl_bfd"):
        assert speed[name]["tokens_per_second"] > 0, speed[name]
    ratios = results["speed_ratios"]
    assert ratios["sfttrain_vs_trl_padded"] > 0 and ratios["sfttrain_vs_trl_bfd"] > 0
