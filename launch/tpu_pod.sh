#!/usr/bin/env bash
# TPU VM pod slice: the same command on every host; jax.distributed finds the pod by itself.
#   bash launch/tpu_pod.sh my-tpu us-central2-b configs/repaint_sweep.py gs-fuse-or-nfs/runs/sweep
# The work directory must be a filesystem every host sees (NFS, GCS FUSE): each host writes its
# own chunks, host 0 writes manifests and the report.
set -euo pipefail
TPU=${1:?usage: tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [extra flags]}
ZONE=${2:?}; CONFIG=${3:?}; WORKDIR=${4:?}
shift 4
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd ~/ibo_jax && pip install -q -e . 'jax[tpu]' && python -m ibo_jax.launch --config $CONFIG --workdir $WORKDIR --distributed $*"
