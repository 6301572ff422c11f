#!/usr/bin/env bash
# GPU checks for sfttrain, made to survive a bare GPU image (torch, transformers, peft, pyarrow,
# typer, pytest, accelerate and little else): every part runs, and records its result, whatever
# another part did; the exit code is 1 if any part failed. Results go to $OUT (default: a
# temporary folder): env.txt, gpu_tests.txt, checks.txt, speed.txt, results.json, parts.txt.
#   1. env        nvidia-smi, python3, and which optional packages are importable
#   2. gpu tests  `pytest tests/sfttrain -m gpu`: packed isolation in bf16 (sdpa, flash-attn
#                 varlen with its one-sequence control), QLoRA steps
#   3. checks     bench/train_speed.py (a): bf16 full fine-tuning and QLoRA steps, loss, peak memory
#   4. speed      bench/train_speed.py (b): tokens/s and MFU of sfttrain (flash-attn varlen and
#                 sdpa packed) vs TRL padded and TRL BFD padding-free, same model and data
# Missing packages travel as wheels: run `bash bench/gpu_wheels.sh` here first (it fills .whl/,
# and says what each wheel is for), name `.whl` in the device call's `carry`; this script installs
# them into /tmp/site. Without them the parts that need them record why they could not run.
# Extra arguments go to train_speed.py, e.g. `bash bench/gpu_check.sh --examples 1000` (or
# `--tiny`, which runs the whole script on CPU in a minute or two).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
: > "$out/parts.txt"
failed=0
part() {  # part NAME LOG COMMAND...: run one part, keep its output, record ok or failed (rc)
  local name=$1 log=$2
  shift 2
  "$@" 2>&1 | tee "$out/$log"
  local rc=${PIPESTATUS[0]}
  if [ $rc -eq 0 ]; then echo "$name: ok" >> "$out/parts.txt"
  else echo "$name: failed (exit $rc, see $log)" >> "$out/parts.txt"; failed=1; fi
}
env_report() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
  python3 - <<'EOF'
import importlib.metadata as m
import importlib.util as u
import sys

print("python", sys.version.split()[0])
for name in ("torch", "transformers", "peft", "pyarrow", "typer", "pydantic", "jsonschema",
             "datasets", "trl", "flash_attn", "bitsandbytes", "liger_kernel"):
    found = u.find_spec(name) is not None
    try:
        version = m.version(name.replace("_", "-")) if found else "missing"
    except m.PackageNotFoundError:
        version = "present"
    print(f"{name}: {version}")
EOF
}
part env env.txt env_report
part "gpu tests" gpu_tests.txt python3 -m pytest tests/sfttrain -m gpu -q -p no:cacheprovider -rs
part checks checks.txt python3 bench/train_speed.py --out "$out/bench" --results "$out/results.json" --skip-speed "$@"
part speed speed.txt python3 bench/train_speed.py --out "$out/bench" --results "$out/results.json" --skip-checks "$@"
echo "--- parts"
cat "$out/parts.txt"
exit $failed
