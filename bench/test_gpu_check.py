"""bench/gpu_check.sh survives the bare GPU image, simulated here on CPU: packages that image lacks
are hidden (tests/bare_gpu_image/sitecustomize.py), and every part still runs and records its result."""

import json
import os
import subprocess

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

# not on the GPU image (KINDS.md's package list); pydantic travels as a wheel (bench/gpu_wheels.sh)
NOT_CARRIED = "jsonschema,jsonschema_specifications,referencing,datasets,trl,dill,multiprocess,flash_attn,bitsandbytes,liger_kernel"
PARTS = ("env", "gpu tests", "checks", "speed")


def gpu_check(tmp_path, hidden: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {
        **os.environ,
        "OUT": str(tmp_path),
        "HIDE_MODULES": hidden,
        "PYTHONPATH": str(REPO / "tests" / "bare_gpu_image"),
    }
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--tiny"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    parts = dict(line.split(": ", 1) for line in (tmp_path / "parts.txt").read_text().splitlines())
    return done, parts


def test_every_part_runs_on_the_bare_image_with_pydantic_carried(tmp_path):
    done, parts = gpu_check(tmp_path, NOT_CARRIED)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert parts == {name: "ok" for name in PARTS}
    assert "jsonschema: missing" in (tmp_path / "env.txt").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    checks, speed = results["checks"], results["speed"]
    assert checks["bf16"]["finite"] and checks["bf16"]["steps"] == 1
    assert "bitsandbytes" in checks["qlora"]["skipped"]
    assert speed["sfttrain_sdpa"]["tokens_per_second"] > 0
    assert "flash-attn" in speed["sfttrain_flash"]["skipped"]
    for name in ("trl_padded", "trl_bfd"):
        assert "needs trl and datasets" in speed[name]["skipped"]
    assert results["speed_setup"]["model_tflops_per_epoch"] > 0


def test_nothing_carried_still_records_every_part(tmp_path):
    done, parts = gpu_check(tmp_path, NOT_CARRIED + ",pydantic,pydantic_core")
    assert done.returncode == 1
    assert list(parts) == list(PARTS) and parts["env"] == "ok"
    assert "SKIPPED" in (tmp_path / "gpu_tests.txt").read_text()  # on CPU they skip; ran anyway
    for name, log in (("checks", "checks.txt"), ("speed", "speed.txt")):
        assert parts[name].startswith("failed"), parts
        assert "pydantic" in (tmp_path / log).read_text()
