#!/usr/bin/env bash
# GPU checks for sfttrain, on a CUDA machine: the `gpu` tests, then bench/train_speed.py
# ((a) bf16 and QLoRA steps on a random-init SmolLM2-360M shape, (b) tokens/s vs TRL padded and
# BFD packing). Results go to $OUT (default: a temporary folder); extra arguments go to
# train_speed.py, e.g. `bash bench/gpu_check.sh --examples 1000`. Needs: pip install -e '.[gpu,dev]'.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import importlib.util as u; print({m: bool(u.find_spec(m)) for m in ('flash_attn', 'bitsandbytes')})" | tee -a "$out/gpu.txt"
python -m pytest tests/sfttrain -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.txt"
python bench/train_speed.py --out "$out/bench" "$@" 2>&1 | grep -v "^{'" | tee "$out/train_speed.txt"
cp "$out/bench/results.json" "$out/train_speed.json"
