#!/usr/bin/env bash
# GPU benchmarks, each once under its own time limit (GPU time is scarce): one JSON line per
# benchmark in $OUT/<name>.log (last line), device facts in $OUT/gpu.txt.
#   OUT=/tmp/gpu bash benchmarks/gpu_suite.sh                       # profile variants repaint unet (<= 570 s)
#   OUT=/tmp/gpu bash benchmarks/gpu_suite.sh variants unet repaint  # some, in this order
# profile: per-kernel time of one UNet forward (benchmarks/gpu_profile.py). vit_h14, vit_g14: forward,
# rollout, gradient-weighted rollout, AttnLRP and 50-step IG on full-size ViTs (benchmarks/gpu_vit.py).
# repaint8: the RePaint benchmark with diffusers' default 8-channel attention heads, reported apart.
# After `variants`, the benchmarks that follow build the UNet in the fastest formulation it found
# (benchmarks/_variants.py: 'ibo', the library's default, unless another beats it by > 2%), so one
# run measures the targets with the winner; $VARIANT sets it by hand. Each log's JSON says which.
# Every script has a --smoke mode that tests/test_benchmarks.py runs on the CPU; SMOKE=1 runs the
# whole suite so (tiny shapes, any machine, no time limits), which tests/test_benchmarks.py also
# does. Each benchmark's exit status is in $OUT/<name>.rc: read a log only when it is 0.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ibo_jax_gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 IBO_JAX_NO_PROGRESS=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
run() {  # one benchmark; its exit status goes to $OUT/<name>.rc (124: stopped by its time limit)
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  if [ -n "${SMOKE:-}" ]; then  # smoke runs check the scripts, not the clock: no time limit
    python3 "$@" --smoke > "$OUT/$name.log" 2>&1
  else
    timeout "$limit" python3 "$@" > "$OUT/$name.log" 2>&1
  fi
  local rc=$?
  echo "$rc" > "$OUT/$name.rc"
  case $rc in 0) ;; 124|137) echo "== $name TIMED OUT after ${limit}s: its last JSON line is partial, not a result" ;;
                  *) echo "== $name FAILED (rc=$rc)" ;; esac
  echo "== $name rc=$rc $((SECONDS - t0))s"
  tail -c 1500 "$OUT/$name.log"; echo
}
VARIANT=${VARIANT:-ibo}
names=${*:-profile variants repaint unet}  # the open issues' benchmarks; repaint8, cam, classifier by name
for name in $names; do
  case $name in
    variants) run variants "${T_VARIANTS:-180}" benchmarks/unet_variants.py --gpu
              VARIANT=$(python3 benchmarks/_variants.py --best "$OUT/variants.log" 2>/dev/null || echo ibo)
              echo "== variant for the benchmarks that follow: $VARIANT" | tee -a "$OUT/gpu.txt" ;;
    profile) run profile "${T_PROFILE:-90}" benchmarks/gpu_profile.py --gpu ;;
    repaint) run repaint "${T_REPAINT:-170}" benchmarks/repaint_throughput.py --gpu --batches 8 32 64 --calls 30 --variant "$VARIANT" ;;
    repaint8) run repaint8 "${T_REPAINT8:-120}" benchmarks/repaint_throughput.py --gpu --batches 32 --calls 30 --head-dim 8 --variant "$VARIANT" ;;
    cam) run cam "${T_CAM:-150}" benchmarks/cam_throughput.py --gpu ;;
    unet) run unet "${T_UNET:-130}" benchmarks/unet_throughput.py --gpu --variant "$VARIANT" ;;
    classifier) run classifier "${T_CLASSIFIER:-90}" benchmarks/classifier_throughput.py --gpu ;;
    vit_h14) run vit_h14 "${T_VIT:-240}" benchmarks/gpu_vit.py --models vit_h14 ;;
    vit_g14) run vit_g14 "${T_VIT:-240}" benchmarks/gpu_vit.py --models vit_g14 ;;
    *) echo "gpu_suite: unknown benchmark '$name' (profile, variants, repaint, repaint8, unet, cam, classifier, vit_h14, vit_g14)"; exit 2 ;;
  esac
done
