#!/usr/bin/env bash
# The main job on the bundled example, on CPU and offline: set up .venv if needed, build the
# example data with the bundled SmolLM2 tokenizer, then train a tiny random-init Llama on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash .ci/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
sftprep build --config examples/build.yaml --overwrite
sftprep verify out/example-build
rm -rf runs/quickstart  # the quickstart's own run, started over each time (sfttrain never deletes a run itself)
sfttrain run --config examples/train.yaml "$@"
