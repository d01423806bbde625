#!/usr/bin/env bash
# Sets up the test environment from the project's own files and runs the whole test suite.
#   bash scripts/test.sh            (README quick start; .ci/run calls this)
# It passes --runslow: tests marked `slow` (> ~30 s on 2 CPU cores) run here as everywhere in CI;
# a plain `python -m pytest` skips them (or set IBO_JAX_SLOW=1, which also runs the ResNet50
# Ablation/Score-CAM parity cases, minutes each).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test,interop,pcam]"
# grad-cam and lpips declare torchvision, which would pull a multi-GB CUDA torch: install them
# without dependencies (their real needs, opencv-python-headless and ttach, are in the interop extra).
python -m pip install -q --no-deps "grad-cam==1.5.7" "lpips==0.1.4"
export JAX_PLATFORMS=cpu
python -m pytest -q --runslow "$@"
