"""Data parallel on CPU: torchrun with 2 processes (gloo). Each rank trains on different rows,
together they cover the build, and a resumed run continues with each rank's identical next batch.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO, random_rows, write_build

WORKER = REPO / "tests" / "sfttrain" / "ddp_worker.py"


def torchrun(tmp_path, config: dict, *args: str) -> None:
    """ddp_worker.py on 2 gloo ranks with this config; fails the test with its stderr."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(tmp_path / "config.json"), str(tmp_path), *args]  # fmt: skip
    process = subprocess.Popen(
        command,
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers
        raise
    assert process.returncode == 0, stderr[-3000:]


def test_eval_under_two_ranks_equals_one_process(tmp_path, base_config):
    """5 eval micro-batches of unequal sizes on 2 ranks: rank 1 pads with a repeat of micro-batch
    0, which must not count; the loss is the token mean, as in one process."""
    from sfttrain.config import load_config
    from sfttrain.training import prepare

    rows = random_rows(4, 64, seed=1) + random_rows(5, 24, seed=2)
    data = write_build(tmp_path / "b", random_rows(2, 64), eval_rows=rows)
    config = {**base_config, "data": str(data), "batch_tokens": 64, "seed": 3}
    torchrun(tmp_path, config, "eval")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    alone = prepare(load_config(overrides={**config, "output_dir": str(tmp_path / "one")}))
    one = alone.trainer.evaluate()
    for rank in ranks:
        assert rank["eval_tokens"] == one["eval_tokens"] == sum(sum(r["loss_mask"]) for r in rows)
        assert abs(rank["eval_loss"] - one["eval_loss"]) < 1e-5, (rank, one)
        assert abs(rank["eval_token_accuracy"] - one["eval_token_accuracy"]) < 1e-9


def test_two_ranks_see_different_rows_and_resume_exactly(tmp_path, base_config):
    # 16 rows of 64 tokens, 128-token micro-batches: 8 per epoch, 4 per rank, 2 steps of 2 per rank.
    # Resuming mid-epoch under DDP is the case where Trainer alone would not give the sampler its epoch.
    data = write_build(tmp_path / "b", random_rows(16, 64))
    config = {
        **base_config,
        "data": str(data),
        "batch_tokens": 128,
        "grad_accum": 2,
        "epochs": 3,
        "save_steps": 3,
    }
    torchrun(tmp_path, config)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    for epoch in range(3):
        rows = [
            {i for batch in r["whole"][4 * epoch : 4 * epoch + 4] for i in batch} for r in ranks
        ]
        assert len(ranks[0]["whole"]) == len(ranks[1]["whole"]) == 12
        assert not rows[0] & rows[1], f"epoch {epoch}: both ranks trained rows {rows[0] & rows[1]}"
        assert rows[0] | rows[1] == set(range(32)), f"epoch {epoch}: not every example was trained"

    for r in (
        ranks
    ):  # stopped after 3 steps = 6 micro-batches per rank, half way through the second epoch
        assert r["first"][:6] == r["whole"][:6]
        assert r["rest"] == r["whole"][6:]


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo on Linux/macOS"),
]
