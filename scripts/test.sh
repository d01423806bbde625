#!/usr/bin/env bash
# Sets up the test environment from the project's own files and runs the whole test suite.
#   bash scripts/test.sh            (README quick start; .ci/run calls this)
# It passes --runslow: tests marked `slow` (> ~30 s on 2 CPU cores) run here as everywhere in CI;
# a plain `python -m pytest` skips them (or set IBO_JAX_SLOW=1, which also runs the ResNet50
# Ablation/Score-CAM parity cases, minutes each).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test,interop,pcam]"
# grad-cam, lpips and timm declare torchvision, which would pull a multi-GB CUDA torch: install them
# without dependencies (their real needs are in the interop extra); transformers, tokenizers and lxt
# likewise (the tests use the ViT/Dinov2 models and lxt's rule functions only).
python -m pip install -q --no-deps "grad-cam==1.5.7" "lpips==0.1.4" "timm==1.0.31" "transformers==5.25.0" \
  "tokenizers==0.23.1" "lxt==2.1"
export JAX_PLATFORMS=cpu
python -m pytest -q --runslow "$@"
