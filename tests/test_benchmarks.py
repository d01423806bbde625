"""The benchmark scripts the GPU sessions run, in their --smoke mode (tiny shapes, on this CPU).

GPU time is scarce: a script that breaks should break here, not on the lent machine. Each run
must print one JSON line with the fields the README's tables are built from.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    """A benchmarks/ script as a module, loaded by path (benchmarks/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(script: str, *args: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)  # no time limit: a busy machine is slow, not broken
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """gpu_suite.sh in SMOKE mode (tiny shapes on this CPU): the variants run, then repaint and unet
    with the formulation it chose. Returns the suite's output folder."""
    out = tmp_path_factory.mktemp("gpu_suite")
    env = dict(os.environ, JAX_PLATFORMS="cpu", SMOKE="1", OUT=str(out))
    env.pop("VARIANT", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "variants", "repaint", "unet"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _log(out: Path, name: str) -> dict:
    """The final JSON line of one suite benchmark, only if it finished (exit status 0)."""
    text = (out / f"{name}.log").read_text()
    rc = (out / f"{name}.rc").read_text().strip()
    if rc in ("124", "137"):
        pytest.fail(f"{name}: timed out (exit {rc}); its log ends:\n{text[-2000:]}")
    assert rc == "0", f"{name}: exit {rc}; its log ends:\n{text[-3000:]}"
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    assert lines, (out / f"{name}.log").read_text()[-3000:]
    return json.loads(lines[-1])


@pytest.mark.slow  # the SMOKE gpu_suite fixture
def test_repaint_gpu_mode_smoke(suite):
    out = _log(suite, "repaint")
    assert out["unet_calls"] == 2410 and out["undo_steps"] == 2160 and out["extrapolated"]
    assert out["dtype"] == "bf16" and out["best_s_per_inpainting"] > 0
    assert all(r["s_per_call"] > 0 and r["tflops"] > 0 for r in out["rows"])


def test_repaint_cpu_side_by_side_smoke():
    out = _run("repaint_throughput.py", "--smoke")
    for case in out["cases"]:
        assert case["s_ibo_jax"] > 0 and case["s_diffusers"] > 0
        assert 0 < case["gflop_executed_per_call_per_image"] <= case["gflop_per_call_per_image"]
    assert out["variant"] == "ibo"


@pytest.mark.slow  # the SMOKE gpu_suite fixture
def test_unet_gpu_mode_smoke(suite):
    out = _log(suite, "unet")
    assert out["gflop_executed"] <= out["gflop_per_image"]  # sub-pixel upsampling executes fewer
    assert {r["dtype"] for r in out["forward"]} == {"bf16", "fp32_tf32"} and out["train_step"][0]["ms"] > 0


@pytest.mark.slow  # the SMOKE gpu_suite fixture
def test_unet_variants_smoke(suite):
    out = _log(suite, "variants")
    assert out["dtype"] == "bf16"
    rows = {r["variant"]: r for r in out["rows"]}
    assert set(rows) == {"ibo", "direct_up", "flax_gn", "gn_alt", "dpa", "previous"}
    assert all(r["ms"] > 0 for r in rows.values())
    assert all(r["max_rel_diff"] < 0.05 for r in rows.values())  # bf16: same function, rounding apart


@pytest.mark.slow  # the SMOKE gpu_suite fixture
def test_suite_hands_the_fastest_variant_on(suite):
    chosen = _script("_variants").best(_log(suite, "variants")["rows"])
    assert _log(suite, "repaint")["variant"] == chosen and _log(suite, "unet")["variant"] == chosen
    assert f"variant for the benchmarks that follow: {chosen}" in (suite / "gpu.txt").read_text()


def test_best_variant_rule(tmp_path):
    variants = _script("_variants")
    best, best_from_log = variants.best, variants.best_from_log

    rows = [{"variant": "ibo", "ms": 100.0, "max_rel_diff": 0.0}, {"variant": "flax_gn", "ms": 97.0, "max_rel_diff": 0.01},
            {"variant": "dpa", "ms": 90.0, "max_rel_diff": 0.5}]  # dpa: fastest, but a different function
    assert best(rows) == "flax_gn"
    assert best(rows, margin=0.05) == "ibo"  # 3% is within the margin: keep the defaults
    assert best(rows[1:]) == "ibo"  # no baseline row: keep the defaults
    log = tmp_path / "variants.log"
    log.write_text("compiling...\n" + json.dumps({"bench": "unet_variants", "rows": rows}) + "\n")
    assert best_from_log(str(log)) == "flax_gn"
    log.write_text("Traceback (most recent call last): ...\n")
    assert best_from_log(str(log)) == "ibo" and best_from_log(str(tmp_path / "missing.log")) == "ibo"


def test_gpu_profile_smoke():
    out = _run("gpu_profile.py", "--smoke")
    assert out["device_ms_per_forward"] > 0 and abs(sum(k["share"] for k in out["kinds"].values()) - 1) < 1e-3
    assert out["top"] and all(r["ms"] >= 0 for r in out["top"])
    assert "convolution" in out["kinds"]  # XLA's CPU convolution thunks are named conv_general_dilated.N


def test_profile_kinds():
    kind_of = _script("gpu_profile").kind_of

    assert kind_of("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc") == "convolution"
    assert kind_of("cudnn_generated_fort_native_sdpa_sm90_flash_fprop") == "attention"
    assert kind_of("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNT") == "matmul"
    assert kind_of("loop_convert_multiply_fusion_3") == "fusion"
    assert kind_of("input_reduce_fusion") == "fusion"
    assert kind_of("ynn_fusion.12") == "ynnpack_conv_or_dot"


def test_grid_fills_smoke():
    out = _run("grid_fills.py", "--smoke")
    assert set(out["fills_per_s"]) >= {"blackening", "nli", "ibo_b32", "ibo_b64", "ibo_b32_bf16"}
    assert all(v > 0 for v in out["fills_per_s"].values())
    demo, bench = out["fills_per_patch"]["demo"], out["fills_per_patch"]["benchmark"]
    assert bench["ibo"] < demo["ibo"]  # the grid computes fewer fills per patch than the demo
