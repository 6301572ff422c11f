#!/usr/bin/env bash
# Download, here (where the package registry is reachable), the wheels that bench/gpu_check.sh
# installs on a bare GPU image (one with only torch, transformers, peft, pyarrow, typer, pytest,
# accelerate, jinja2, tokenizers, pyyaml, rich): they land in .whl/ (git-ignored through
# .git/info/exclude), which the device call carries and gpu_check.sh installs into /tmp/site.
#   needed by sftprep/sfttrain:  pydantic pydantic-core annotated-types typing-inspection
#   manifest schema validation:  jsonschema jsonschema-specifications referencing rpds-py
#                                (optional: without them the manifest is checked by shape only)
#   the TRL baselines:           trl datasets dill multiprocess
#   QLoRA / 8-bit:               bitsandbytes (43 MB)
# flash-attn has no wheel on the package registry (sdist only, built against one torch/CUDA), so
# the flash-attention parts of gpu_check.sh record "skipped" unless the image already has it.
# Versions are the ones in this machine's .venv, for CPython 3.12 on x86-64 manylinux.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
packages=(pydantic pydantic-core annotated-types typing-inspection
  jsonschema jsonschema-specifications referencing rpds-py
  trl datasets dill multiprocess bitsandbytes)
pins=()
for name in "${packages[@]}"; do
  version=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [ -n "$version" ]; then pins+=("$name==$version"); else pins+=("$name"); fi
done
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${pins[@]}"
ls -l .whl
du -sh .whl
