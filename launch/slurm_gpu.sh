#!/usr/bin/env bash
# SLURM: one process per node, all local GPUs per process, jax.distributed over the allocation.
#   sbatch --nodes=2 --gpus-per-node=8 launch/slurm_gpu.sh configs/camelyon16.py runs/c16
#SBATCH --job-name=ibo_jax
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
set -euo pipefail
CONFIG=${1:?usage: slurm_gpu.sh CONFIG WORKDIR [extra flags]}
WORKDIR=${2:?usage: slurm_gpu.sh CONFIG WORKDIR [extra flags]}
shift 2
# jax.distributed.initialize() reads the SLURM environment (coordinator = first node).
srun python -m ibo_jax.launch --config "$CONFIG" --workdir "$WORKDIR" --distributed "$@"
