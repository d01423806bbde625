"""Stage `repaint_sweep`: cost, realism and rank agreement per RePaint setting; resume; configs."""

import csv

import numpy as np
import pytest

from ibo_jax import artifacts, pipeline
from ibo_jax import io as ibo_io

S = 16
METHODS = ["gradcam", "eigencam", "layercam", "random"]


def _workdir(root):
    """data (random 16 px patches), explain (tumor = a red square, heatmaps of varying quality)."""
    n_data = 24
    r = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    label = np.arange(n_data) % 2
    tumor_mask = np.zeros((n_data, S, S), bool)
    tumor_mask[label == 1, 4:12, 4:12] = True
    ibo_io.write_npz(root / "patches.npz", {
        "image": r.integers(0, 256, (n_data, S, S, 3), dtype=np.uint8), "label": label,
        "tumor_mask": tumor_mask, "split": np.array(["train"] * 12 + ["val"] * 4 + ["test"] * 8)})
    config = _config(root)
    pipeline.run(config, root, stages=["data"])

    from ibo_jax_testing import write_explained

    n = 6
    r = np.random.default_rng(0)
    image = np.full((n, S, S, 3), 0.45, np.float32) + r.normal(0, 0.03, (n, S, S, 3)).astype(np.float32)
    tumor = np.zeros((n, S, S), bool)
    for i in range(n):
        y, x = r.integers(0, S - 8, 2)
        tumor[i, y:y + 8, x:x + 8] = True
    image[tumor] = [0.8, 0.3, 0.3]
    yy, xx = np.mgrid[:S, :S]
    heat = np.zeros((n, len(METHODS), S, S), np.float32)
    for i in range(n):
        cy, cx = np.argwhere(tumor[i]).mean(0)
        d = np.hypot(yy - cy, xx - cx)
        heat[i, 0] = np.exp(-d / 3)  # on the tumor
        heat[i, 1] = np.exp(-np.hypot(yy - (S - 1 - cy), xx - (S - 1 - cx)) / 3)  # mirrored: off it
        heat[i, 2] = np.exp(-d / 6) + 0.3 * r.random((S, S))  # on it, blurred and noisy
        heat[i, 3] = r.random((S, S))
    write_explained(root / "explain", image=np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), tumor_mask=tumor,
                    heat=heat, methods=METHODS, controls=["random"])
    return config


INPUTS = ("data", "train_classifier", "train_ddpm", "explain")


@pytest.fixture
def sweep_env(tmp_path, monkeypatch, toy_eps_model, colour_classifier):
    from ibo_jax.models import loaders

    monkeypatch.setenv("IBO_JAX_NO_PROGRESS", "1")
    # eps = 0.5 x: the sampler pulls the regenerated pixels towards grey (0 in [-1, 1])
    eps = toy_eps_model(image_size=S)
    monkeypatch.setattr(loaders, "load_eps_model", lambda *a, **k: eps)
    monkeypatch.setattr(loaders, "load_classifier", lambda *a, **k: colour_classifier)
    config = _workdir(tmp_path)
    return tmp_path, config


@pytest.fixture
def sweep_ctx(stage_context):
    """ctx(root, config) -> the repaint_sweep stage's context, as pipeline.run builds it."""
    return lambda root, config: stage_context("repaint_sweep", root, config=config, inputs=INPUTS)


def test_sweep_rank_agreement_and_resume(sweep_env, sweep_ctx):
    from ibo_jax.stages import repaint_sweep

    root, config = sweep_env
    cfg = config.repaint_sweep
    cfg.grid = ((3, 1, 1), (4, 2, 2))
    cfg.n_images, cfg.batch_size, cfg.rank_images, cfg.n_boot = 4, 16, 5, 50
    out = repaint_sweep.run(sweep_ctx(root, config))
    assert out["settings"] == 2 and out["rank_images"] == 5
    with open(root / "repaint_sweep" / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["network_calls"] for r in rows] == ["3", "6"]  # (4, 2, 2): 4 + 2 re-noised steps
    assert [r["sampler"] for r in rows] == ["repaint", "repaint"] and all(float(r["seconds"]) > 0 for r in rows)
    _, hm = artifacts.read_explained(root / "explain")
    n_valid = int(hm["valid"][:5, :3].sum())  # the ranked methods (not the random control)
    from ibo_jax.evaluation import geometry

    morf = geometry.compute(None, hm["levels"][:5], hm["n_levels"][:5], hm["valid"][:5], np.zeros((5, S, S), bool),
                            n_masks=4, keep_masks=True)["morf_masks"][:, :3]  # [5, 3, 4, H, W]
    distinct = sum(len({m.tobytes() for m in morf[i][hm["valid"][i, :3]].reshape(-1, S * S)}) for i in range(5))
    for r in rows:  # valid (image, method) pairs x M1..M4, identical masks of a patch inpainted once
        assert int(r["rank_inpaintings"]) == distinct <= n_valid * 4
        assert 0.0 <= float(r["mard_lo"]) <= float(r["mard_hi"]) <= 2.0 and 0.0 <= float(r["mard"]) <= 2.0
    sweep = artifacts.read_json(artifacts.SWEEP_JSON, root / "repaint_sweep")
    ra = sweep["rank_agreement"]
    assert ra["methods"] == METHODS[:3] and ra["n_images"] == 5
    assert ra["gt_ranking"]["gradcam"] == 1 and ra["gt_ranking"]["eigencam"] == 3  # on / off the tumor
    assert set(ra["paired_mard_tests"]) == {"repaint(3,1,1)<repaint(4,2,2)", "repaint(4,2,2)<repaint(3,1,1)"}
    # Regenerating the red tumor square with grey lowers p(tumor): the map off the tumor ranks last
    assert all(r["ranking"]["eigencam"] == 3 for r in sweep["rows"])
    p = np.load(root / "repaint_sweep" / "chunks" / "repaint_3_1_1.npz")["rank_p"]
    assert p.shape == (n_valid * 4,) and p.min() < 0.3 < 0.7 < p.max()
    assert (root / "repaint_sweep" / "cost_quality.png").is_file()

    # resume: a finished setting is read back, a deleted one recomputed with the same keys
    (root / "repaint_sweep" / "chunks" / "repaint_4_2_2.json").unlink()
    again = repaint_sweep.run(sweep_ctx(root, config))
    assert again["best_mard"] == out["best_mard"]
    rows2 = artifacts.read_json(artifacts.SWEEP_JSON, root / "repaint_sweep")["rows"]
    for a, b in zip(sweep["rows"], rows2, strict=True):
        assert a["mard"] == b["mard"] and a["ssim"] == pytest.approx(b["ssim"], abs=1e-9)


def test_sweep_without_rank_agreement_and_report_section(sweep_env, sweep_ctx):
    from ibo_jax.reporting import report
    from ibo_jax.stages import repaint_sweep

    root, config = sweep_env
    cfg = config.repaint_sweep
    cfg.grid, cfg.n_images, cfg.rank_images, cfg.warm_timing = ((3, 1, 1),), 2, 0, False
    out = repaint_sweep.run(sweep_ctx(root, config))
    assert "best_mard" not in out
    sweep = artifacts.read_json(artifacts.SWEEP_JSON, root / "repaint_sweep")
    assert "rank_agreement" not in sweep and "mard" not in sweep["rows"][0]
    text = "".join(report.sweep_section(sweep))
    assert "| repaint(3,1,1) | 3 |" in text and "MARD" not in text
    sweep["rank_agreement"] = {"n_images": 5}
    sweep["rows"][0].update(mard=0.5, mard_lo=0.0, mard_hi=1.0, spearman=0.5)
    assert "| 0.500 | [0.000, 1.000] | 0.500 |" in "".join(report.sweep_section(sweep))


def test_demo_config_runs_the_sweep_before_the_report():
    order = list(pipeline.STAGES)
    assert order.index("repaint_sweep") < order.index("report")
    assert "repaint_sweep" in pipeline.STAGES["report"].optional_deps
    from ibo_jax_testing import demo_config

    assert "repaint_sweep" in demo_config()


_WORKER = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
nproc, pid, port, root, size = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
if nproc > 1:
    jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)
from pathlib import Path
from ibo_jax import parallel
from ibo_jax.stages import repaint_sweep
from ibo_jax.models import loaders
from ibo_jax_testing import demo_config, stage_context
from ibo_jax_testing.models import colour_classifier, toy_eps_model
loaders.load_eps_model = lambda *a, **k: toy_eps_model(image_size=size)
loaders.load_classifier = lambda *a, **k: colour_classifier()
root = Path(root)
config = demo_config()
config.image_size = size
config.data.source, config.data.npz_path, config.data.n_examples = "npz", str(root / "patches.npz"), 0
cfg = config.repaint_sweep
cfg.grid = ((3, 1, 1), (4, 2, 2), (5, 1, 1))
cfg.n_images, cfg.batch_size, cfg.rank_images, cfg.n_boot, cfg.warm_timing = 4, 16, 4, 50, False
ctx = stage_context("repaint_sweep", root, config=config, mesh=parallel.make_mesh(),
                    inputs=("data", "train_classifier", "train_ddpm", "explain"))
out = repaint_sweep.run(ctx)
print(json.dumps({"pid": pid, "out": out, "chunks": sorted(p.name for p in (root / "repaint_sweep" / "chunks").glob("*.json"))}))
"""


def _config(root):
    """The demo config pointed at the npz data `_workdir` wrote (the worker script does the same)."""
    from ibo_jax_testing import demo_config

    config = demo_config()
    config.image_size = S
    config.data.source = "npz"
    config.data.npz_path = str(root / "patches.npz")
    config.data.n_examples = 0
    return config


def test_sweep_settings_split_over_two_processes(tmp_path):
    """Two jax.distributed processes share the settings (each on its local devices); process 0
    assembles the same table as one process alone."""
    import os
    import shutil
    import sys

    from ibo_jax_testing.procs import last_json, run_workers, worker_env

    _workdir(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = worker_env(IBO_JAX_NO_PROGRESS="1", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    port = str(21000 + os.getpid() % 20000)

    def launch(nproc, root):
        return [last_json(o) for o in run_workers(
            [[sys.executable, str(script), str(nproc), str(i), port, str(root), str(S)] for i in range(nproc)], env)]

    (alone,) = launch(1, tmp_path / "one")
    p0, p1 = launch(2, tmp_path / "two")
    assert p1["out"] == {"settings": 3} and "best_mard" in p0["out"]  # process 1 only computed
    assert p0["chunks"] == alone["chunks"] == ["repaint_3_1_1.json", "repaint_4_2_2.json", "repaint_5_1_1.json"]
    one = ibo_io.read_json(tmp_path / "one" / "repaint_sweep" / "sweep.json")["rows"]
    two = ibo_io.read_json(tmp_path / "two" / "repaint_sweep" / "sweep.json")["rows"]
    for a, b in zip(one, two, strict=True):
        assert (a["t_T"], a["mard"], a["ranking"]) == (b["t_T"], b["mard"], b["ranking"])
        assert a["ssim"] == pytest.approx(b["ssim"], abs=1e-9)


def test_report_labels_settings_that_differ_only_in_eta():
    from ibo_jax.reporting import report

    rows = [{"setting": f"ddim_repaint(3,1,1,eta={e:g})", "sampler": "ddim_repaint", "t_T": 3, "jump_length": 1,
             "jump_n_sample": 1, "eta": e, "network_calls": 3} for e in (0.2, 0.5)]
    text = "".join(report.sweep_section({"rows": rows, "n_images": 2, "mask_fraction": 0.25}))
    assert "| ddim_repaint(3,1,1,eta=0.2) | 3 |" in text and "| ddim_repaint(3,1,1,eta=0.5) | 3 |" in text
    for r in rows:  # rows of an older sweep (no label): rebuilt, eta included
        del r["setting"]
    text = "".join(report.sweep_section({"rows": rows, "n_images": 2, "mask_fraction": 0.25}))
    assert "| ddim_repaint(3,1,1,eta=0.2) | 3 |" in text and "| ddim_repaint(3,1,1,eta=0.5) | 3 |" in text


def test_sweep_over_samplers_with_a_reference(sweep_env, sweep_ctx):
    from ibo_jax.stages import repaint_sweep

    root, config = sweep_env
    cfg = config.repaint_sweep
    cfg.grid, cfg.reference = ((4, 2, 2), ("ddnm", 3, 1, 1), ("ddim_repaint", 3, 1, 1, 0.5)), (4, 2, 2)
    cfg.n_images, cfg.rank_images, cfg.warm_timing, cfg.n_boot = 4, 0, False, 50
    repaint_sweep.run(sweep_ctx(root, config))
    sweep = artifacts.read_json(artifacts.SWEEP_JSON, root / "repaint_sweep")
    rows = {r["sampler"]: r for r in sweep["rows"]}
    assert set(rows) == {"repaint", "ddnm", "ddim_repaint"} and rows["ddim_repaint"]["eta"] == 0.5
    assert rows["ddnm"]["network_calls"] == 3 and rows["repaint"]["noninferior"]["all"]  # the reference itself
    assert sweep["reference"] == "repaint(4,2,2)" and sweep["cheapest_noninferior"] in (
        "repaint(4,2,2)", "ddnm(3,1,1)", "ddim_repaint(3,1,1,eta=0.5)")
    assert [r["setting"] for r in sweep["rows"]] == ["repaint(4,2,2)", "ddnm(3,1,1)", "ddim_repaint(3,1,1,eta=0.5)"]
    assert all(0 <= r["residual_p"] <= 1 for r in sweep["rows"])  # the tumor squares filled
    with pytest.raises(ValueError, match=r"repaint_sweep.grid\[0\].*sampler 'ddrm' unknown"):
        cfg.grid = (("ddrm", 3, 1, 1),)
        repaint_sweep.run(sweep_ctx(root, config))
