#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the tests (CPU, offline).
#   bash tests/run.sh            the fast tier: everything not marked slow or ray (about 4.5 minutes on 2 cores)
#   bash tests/run.sh -m ray     the --engine ray tests (one local Ray, about a minute)
#   bash tests/run.sh --all      every test, slow and ray ones included (what CI runs)
# Other arguments go to pytest, e.g. `bash tests/run.sh tests/sftprep -k masks`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash .ci/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
tier=(-m "not slow and not ray")
args=()
for arg in "$@"; do
  if [ "$arg" = "--all" ]; then tier=(); else args+=("$arg"); fi
done
python -m pytest "${tier[@]}" "${args[@]}"
