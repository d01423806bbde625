"""Occlusion strategies: kept pixels untouched, formulas, determinism, NLI vs ROAD reference."""

import importlib
import importlib.machinery
import importlib.util
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ibo_jax import artifacts, occlusion
from ibo_jax.occlusion import blurring as blur_mod
from ibo_jax.occlusion import nli as nli_mod
from ibo_jax.occlusion import store

B, H, W = 3, 24, 24
BASIC = ("blackening", "blurring", "mean", "histogram", "nli")


def _data():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W] / H
    img = np.stack(
        [np.stack([0.5 + 0.4 * np.sin(6 * xx + i) * np.cos(4 * yy + c) for c in range(3)], -1) for i in range(B)]
    ).astype(np.float32)
    mask = np.zeros((B, H, W), bool)
    mask[0, 4:14, 6:20] = True
    mask[1] = rng.random((H, W)) < 0.5
    mask[2, :, :12] = True
    mask[2, 0, 0] = False
    return img, mask


def _keys(n, salt=0):
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(salt), i))(jnp.arange(n))


def test_registry():
    assert set(BASIC) <= set(occlusion.STRATEGIES)
    assert tuple(occlusion.REGISTRY) == occlusion.STRATEGIES
    with pytest.raises(ValueError, match="unknown"):
        occlusion.apply("smudge", *_data())


@pytest.mark.parametrize("name", BASIC)
def test_kept_pixels_unchanged_and_range(name):
    img, mask = _data()
    out = np.asarray(occlusion.apply(name, img, mask, key=_keys(B)))
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[~mask], img[~mask])
    assert out.min() >= 0 and out.max() <= 1
    assert np.abs(out[mask] - img[mask]).max() > 1e-3  # something happened


@pytest.mark.parametrize("name", ("histogram", "nli"))
def test_per_example_keys_independent_of_batching(name):
    img, mask = _data()
    keys = _keys(B, salt=7)
    full = np.asarray(occlusion.apply(name, img, mask, key=keys))
    one = np.asarray(occlusion.apply(name, img[1:2], mask[1:2], key=keys[1:2]))
    np.testing.assert_array_equal(full[1], one[0])
    again = np.asarray(occlusion.apply(name, img, mask, key=keys))
    np.testing.assert_array_equal(full, again)
    raw = np.asarray(occlusion.apply(name, img, mask, key=jax.random.key_data(keys)))
    np.testing.assert_array_equal(full, raw)
    with pytest.raises(ValueError, match="key"):
        occlusion.apply(name, img, mask, key=None)


def test_blackening_and_mean_formulas():
    img, mask = _data()
    out = np.asarray(occlusion.apply("blackening", img, mask))
    np.testing.assert_array_equal(out, img * (1 - mask[..., None]))
    out = np.asarray(occlusion.apply("mean", img, mask))
    mu = img.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out, np.where(mask[..., None], mu, img), atol=1e-6)
    out = np.asarray(occlusion.apply("mean", img, mask, kept_only=True))
    np.testing.assert_allclose(out[0][mask[0]][0], img[0][~mask[0]].mean(0), atol=1e-6)


def test_blurring_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    img, mask = _data()
    sigma = blur_mod.default_sigma(W)
    assert sigma == pytest.approx(10 * W / 224)
    out = np.asarray(occlusion.apply("blurring", img, mask))
    ref = ndimage.gaussian_filter(img.astype(np.float64), sigma=(0, sigma, sigma, 0), mode="reflect")
    np.testing.assert_allclose(out, np.where(mask[..., None], np.clip(ref, 0, 1), img), atol=1e-5)
    out3 = np.asarray(occlusion.apply("blurring", img, mask, sigma=3.0))
    ref3 = ndimage.gaussian_filter(img.astype(np.float64), sigma=(0, 3, 3, 0), mode="reflect")
    np.testing.assert_allclose(out3[mask], ref3[mask], atol=1e-5)


def test_histogram_draws_from_kept_values():
    img, mask = _data()
    img = np.round(img * 255) / 255
    out = np.asarray(occlusion.apply("histogram", img, mask, key=_keys(B)))
    for i in range(B):
        for c in range(3):
            kept = set(np.round(img[i][~mask[i]][:, c] * 255).astype(int))
            drawn = set(np.round(out[i][mask[i]][:, c] * 255).astype(int))
            assert drawn <= kept
    # distribution: mean of draws near the kept mean (many draws on image 1, half removed)
    np.testing.assert_allclose(out[1][mask[1]].mean(0), img[1][~mask[1]].mean(0), atol=0.05)


def test_nli_solution_is_neighbour_mean():
    img, mask = _data()
    out = np.asarray(occlusion.apply("nli", img, mask, noise=0.0)).astype(np.float64)
    for i in range(B):
        pad = np.pad(out[i], ((1, 1), (1, 1), (0, 0)))
        inside = np.pad(np.ones((H, W)), 1)
        num = sum(wt * pad[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W] for (dy, dx), wt in nli_mod.NEIGHBOURS)
        den = sum(wt * inside[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W] for (dy, dx), wt in nli_mod.NEIGHBOURS)
        np.testing.assert_allclose(out[i][mask[i]], (num / den[..., None])[mask[i]], atol=1e-5)


def test_nli_cg_matches_scipy():
    img, mask = _data()
    exact = np.asarray(occlusion.apply("nli", img, mask, noise=0.0))
    filled, iters, res = nli_mod.solve_cg(jnp.asarray(img), jnp.asarray(mask), 1e-6, 5000)
    assert float(res) <= 1e-6 and int(iters) < 5000
    np.testing.assert_allclose(np.asarray(filled), exact, atol=1e-4)
    noisy = np.asarray(occlusion.apply("nli", img, mask, key=_keys(B), solver="cg"))
    std = (noisy - exact)[mask].std()
    assert 0.005 < std < 0.015  # ROAD's noise, std 0.01 (clipping trims a little)


def test_all_removed_does_not_crash():
    img, _ = _data()
    mask = np.ones((B, H, W), bool)
    for name in BASIC:
        out = np.asarray(occlusion.apply(name, img, mask, key=_keys(B)))
        assert np.isfinite(out).all()


def test_row_counts_share_one_compilation_per_bucket():
    """The row-wise fills pad their rows to a power of two (`simple.bucket_rows`): 3, 5 and 9 rows
    compile once; host and device inputs give the same images."""
    from ibo_jax.occlusion import histogram as hist_mod
    from ibo_jax.occlusion import simple

    assert [simple.bucket_rows(n) for n in (0, 1, 16, 17, 100)] == [16, 16, 16, 32, 128]
    img, mask = _data()
    img9, mask9 = np.concatenate([img] * 3), np.concatenate([mask] * 3)
    sizes = {}
    for fn in (simple._blacken, simple._mean_fill, blur_mod._blur_fill, hist_mod._batched, nli_mod._add_noise):
        sizes[fn] = fn._cache_size()
    outs = {}
    for n in (3, 5, 9):
        for name in BASIC:
            outs[name, n] = np.asarray(occlusion.apply(name, img9[:n], mask9[:n], key=_keys(n)))
            assert outs[name, n].shape == (n, H, W, 3)
    assert all(fn._cache_size() - before <= 1 for fn, before in sizes.items())
    for name in BASIC:
        np.testing.assert_array_equal(outs[name, 3], outs[name, 9][:3])
        device = occlusion.apply(name, jnp.asarray(img9[:5]), jnp.asarray(mask9[:5]), key=_keys(5))
        np.testing.assert_array_equal(np.asarray(device), outs[name, 5])


@pytest.mark.parametrize(
    "images, mask, match",
    [
        (np.zeros((2, 8, 8)), np.zeros((2, 8, 8), bool), r"\[B, H, W, 3\]"),
        (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), bool), "float"),
        (np.full((2, 8, 8, 3), 2.0), np.zeros((2, 8, 8), bool), r"\[0, 1\]"),
        (np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 7), bool), "remove_mask"),
        (np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8)), "bool"),
    ],
)
def test_bad_input(images, mask, match):
    with pytest.raises(ValueError, match=match):
        occlusion.apply("blackening", images, mask)


def _import_road(monkeypatch):
    """pytorch-grad-cam's ROAD module; its package imports torchvision, replaced by a stand-in
    for this test only (one already installed by another test is reused)."""
    if "torchvision" not in sys.modules:
        tv = types.ModuleType("torchvision")
        tr = types.ModuleType("torchvision.transforms")
        fn = types.ModuleType("torchvision.transforms.functional")
        ops = types.ModuleType("torchvision.ops")
        for mod in (tv, tr, fn, ops):
            mod.__spec__ = importlib.machinery.ModuleSpec(mod.__name__, None)
        for name in ("Compose", "Normalize", "ToTensor", "Resize"):
            setattr(tr, name, object)
        fn.resize = None
        tr.functional = fn
        tv.transforms, tv.ops = tr, ops
        for mod in (tv, tr, fn, ops):
            monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return importlib.import_module("pytorch_grad_cam.metrics.road")


@pytest.mark.interop
def test_nli_matches_pytorch_grad_cam(monkeypatch):
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("pytorch_grad_cam") is None:
        pytest.skip("pytorch-grad-cam not installed")
    road = _import_road(monkeypatch)
    img, mask = _data()
    ours = np.asarray(occlusion.apply("nli", img, mask, noise=0.0))
    imputer = road.NoisyLinearImputer(noise=0.0)
    for i in range(B):
        chw = torch.tensor(img[i].transpose(2, 0, 1))
        keep = torch.tensor((~mask[i]).astype(np.float32))  # reference: 1 = kept, 0 = impute
        ref = imputer(chw, keep).numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(ours[i], np.clip(ref, 0, 1), atol=1e-5)


def _fake_explain(root, n=5, m=3, size=16):
    from ibo_jax_testing import write_explained

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    heat = np.stack([
        np.stack([np.exp(-((xx - rng.random()) ** 2 + (yy - rng.random()) ** 2) / 0.05) for _ in range(m)])
        for _ in range(n)
    ]).astype(np.float32)
    heat[1, -1] = 0.3  # a constant heatmap: excluded
    return write_explained(root / "explain", image=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                           tumor_mask=np.zeros((n, size, size), bool), heat=heat,
                           methods=["gradcam", "eigencam", "random"][:m])


def _ctx(root, cfg):
    from ibo_jax_testing import stage_context

    return stage_context("occlude", root, cfg, key=jax.random.key(0), inputs=("explain", "train_ddpm"))


def test_stage_occlude_layout_resume_and_reader(tmp_path, monkeypatch):
    from ibo_jax.stages import occlude

    monkeypatch.setenv("IBO_JAX_NO_PROGRESS", "1")
    _fake_explain(tmp_path)
    cfg = occlude.default_config()
    cfg.strategies = ("blackening", "histogram", "nli")
    cfg.images_per_chunk = 2
    cfg.n_draws = 2
    summary = occlude.run(_ctx(tmp_path, cfg))
    assert summary["valid_pairs"] == 14 and summary["excluded"]["constant"] == 1
    d = tmp_path / "occlude"
    layout = store.occluded_layout(d)
    assert layout["draws"] == {"blackening": 1, "histogram": 2, "nli": 2}
    assert artifacts.figure_path("occlude", d).is_file() and artifacts.GEOMETRY.path(d).is_file()
    blocks = list(store.load_occluded(d))
    assert len(blocks) == 3 * 2 * 3  # strategies x curves x chunks
    rows = {(b["strategy"], b["curve"]): 0 for b in blocks}
    for b in blocks:
        rows[(b["strategy"], b["curve"])] += len(b["pos"])
        assert b["image"].dtype == np.uint8 and b["image"].shape[1:] == (16, 16, 3)
    assert rows[("blackening", "morf")] == 14 * 4 and rows[("nli", "fixed")] == 14 * 3 * 2
    from ibo_jax.evaluation import geometry

    geo = artifacts.read_geometry(d)
    np.testing.assert_allclose(geometry.areas(geo, "fixed")[0, 0], [0.1, 0.25, 0.5], atol=1 / 256)
    assert geo["valid"].sum() == 14 and geo["excluded"]["invalid_heatmap"] == 1
    # resume: a deleted chunk is rewritten with the same bytes, the others are kept
    first = blocks[5]
    path = d / "chunks" / f"{first['strategy']}__{first['curve']}__{first['name']}.npz"
    path.unlink()
    occlude.run(_ctx(tmp_path, cfg))
    again = next(b for b in store.load_occluded(d, strategy=first["strategy"], curve=first["curve"])
                 if b["name"] == first["name"])
    np.testing.assert_array_equal(again["image"], first["image"])


def test_stage_occlude_ibo_with_tiny_eps_model(tmp_path, monkeypatch, toy_eps_model):
    if "ibo" not in occlusion.STRATEGIES:
        pytest.skip("ibo_jax/occlusion/ibo.py not present")
    from ibo_jax.models import loaders
    from ibo_jax.stages import occlude

    monkeypatch.setenv("IBO_JAX_NO_PROGRESS", "1")
    eps = toy_eps_model(image_size=16)
    monkeypatch.setattr(loaders, "load_eps_model", lambda *a, **k: eps)
    _fake_explain(tmp_path, n=2, m=2)
    cfg = occlude.default_config()
    cfg.strategies = ("ibo",)
    cfg.curves = ("morf",)
    cfg.ibo.t_T, cfg.ibo.jump_length, cfg.ibo.jump_n_sample, cfg.ibo.batch_size = 4, 2, 2, 8
    summary = occlude.run(_ctx(tmp_path, cfg))
    assert summary["rows_written"] == (2 * 2 - 1) * 4
    (block,) = list(store.load_occluded(tmp_path / "occlude"))
    ev, hm = artifacts.read_explained(tmp_path / "explain")
    removed = hm["levels"][block["pos"], block["method"]] <= block["mask"][:, None, None]
    np.testing.assert_array_equal(block["image"][~removed], ev["image"][block["pos"]][~removed])


def test_stage_rows_independent_of_chunking_and_keys_documented(tmp_path, monkeypatch):
    from ibo_jax import rng
    from ibo_jax.stages import occlude

    monkeypatch.setenv("IBO_JAX_NO_PROGRESS", "1")
    base = jax.random.key(3)
    ids = np.array([[rng.stable_int(104), rng.stable_int("eigencam"), rng.stable_int("morf:2"), 1]])
    np.testing.assert_array_equal(
        jax.random.key_data(rng.row_keys(rng.fold(base, "nli"), ids))[0],
        jax.random.key_data(rng.fold(base, "nli", 104, "eigencam", "morf:2", 1)))
    out = {}
    for per in (2, 5):
        root = tmp_path / f"per{per}"
        _fake_explain(root)
        cfg = occlude.default_config()
        cfg.strategies, cfg.curves, cfg.images_per_chunk, cfg.grid_patches = ("histogram",), ("morf",), per, 0
        occlude.run(_ctx(root, cfg))
        blocks = list(store.load_occluded(root / "occlude"))
        rows = {}
        for b in blocks:
            for r in range(len(b["pos"])):
                rows[(int(b["pos"][r]), int(b["method"][r]), int(b["mask"][r]))] = b["image"][r]
        out[per] = rows
    assert out[2].keys() == out[5].keys()
    for k in out[2]:
        np.testing.assert_array_equal(out[2][k], out[5][k])


def test_stage_occlude_insertion_curve(tmp_path, monkeypatch):
    """Insertion: point 1 has everything removed, point i+1 has M_i back (exact original pixels)."""
    from ibo_jax.stages import occlude

    monkeypatch.setenv("IBO_JAX_NO_PROGRESS", "1")
    _fake_explain(tmp_path)
    cfg = occlude.default_config()
    cfg.strategies, cfg.curves, cfg.grid_patches = ("blackening",), ("morf", "insertion"), 0
    summary = occlude.run(_ctx(tmp_path, cfg))
    d = tmp_path / "occlude"
    ev, _ = artifacts.read_explained(tmp_path / "explain")
    morf = {(int(p), int(m), int(k)): img for b in store.load_occluded(d, curve="morf")
            for p, m, k, img in zip(b["pos"], b["method"], b["mask"], b["image"])}
    ins = {(int(p), int(m), int(k)): img for b in store.load_occluded(d, curve="insertion")
           for p, m, k, img in zip(b["pos"], b["method"], b["mask"], b["image"])}
    assert len(ins) == summary["valid_pairs"] * 5 and len(morf) == summary["valid_pairs"] * 4
    for (p, m, k), img in ins.items():
        if k == 1:
            assert not img.any()  # fully blackened
        else:
            removed_in_morf = ~(morf[(p, m, k - 1)] == ev["image"][p]).all(-1)  # M_{k-1}, black there
            np.testing.assert_array_equal(img[removed_in_morf], ev["image"][p][removed_in_morf])
    from ibo_jax.evaluation import geometry

    geo = artifacts.read_geometry(d)
    assert np.allclose(geometry.areas(geo, "insertion")[..., 0][geo["valid"]], 1.0)  # point 1 removes everything


_OCCLUDE_WORKER = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
nproc, pid, port, root, tests = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)
from pathlib import Path
from ibo_jax import parallel
from ibo_jax.models import loaders
from ibo_jax.stages import occlude
from ibo_jax_testing import stage_context
from ibo_jax_testing.models import toy_eps_model
loaders.load_eps_model = lambda *a, **k: toy_eps_model(image_size=16)
cfg = occlude.default_config()
cfg.strategies, cfg.curves, cfg.images_per_chunk, cfg.grid_patches = ("ibo",), ("morf",), 2, 0
cfg.ibo.t_T, cfg.ibo.jump_length, cfg.ibo.jump_n_sample, cfg.ibo.batch_size = 3, 1, 1, 8
ctx = stage_context("occlude", Path(root), cfg, key=jax.random.key(0), mesh=parallel.make_mesh(),
                    inputs=("explain", "train_ddpm"))
print(json.dumps(occlude.run(ctx)["rows_written"]))
"""


def test_stage_occlude_ibo_on_two_processes(tmp_path):
    """Each jax.distributed process inpaints its own chunks on its local devices (on the global
    mesh the processes' different batches made mismatched collectives: an abort)."""
    import os
    import sys

    _fake_explain(tmp_path, n=5, m=2)
    script = tmp_path / "worker.py"
    script.write_text(_OCCLUDE_WORKER)
    from ibo_jax_testing.procs import last_json, run_workers, worker_env

    env = worker_env(IBO_JAX_NO_PROGRESS="1", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    port = str(22000 + os.getpid() % 20000)

    outs = run_workers([[sys.executable, str(script), "2", str(i), port, str(tmp_path), ""] for i in range(2)], env)
    rows = [last_json(o) for o in outs]

    blocks = list(store.load_occluded(tmp_path / "occlude"))
    assert len(blocks) == 3 and sum(rows) == sum(len(b["pos"]) for b in blocks) and min(rows) > 0


def test_identical_inputs_are_computed_once(tmp_path, monkeypatch):
    """Rows of one patch and draw with the same removed pixels share one result: a method whose
    maps equal another's (graded_0 is the oracle) costs nothing, and its rows equal the other's."""
    from ibo_jax import occlusion
    from ibo_jax.stages import occlude

    first, inverse = occlusion.unique_rows(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 0, 0]),
                                         np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1]], bool).reshape(5, 1, 2))
    assert first.tolist() == [0, 2, 3, 4] and inverse.tolist() == [0, 0, 1, 2, 3]

    monkeypatch.setenv("IBO_JAX_NO_PROGRESS", "1")
    d = _fake_explain(tmp_path, m=2)
    from ibo_jax_testing import write_explained

    ev, hm = artifacts.read_explained(d)
    heat = hm["heatmaps"].astype(np.float32)
    write_explained(d, image=ev["image"], tumor_mask=ev["tumor_mask"], heat=np.concatenate([heat, heat[:, :1]], 1),
                    methods=["gradcam", "eigencam", "copy"])
    calls = []
    real_apply = occlusion.apply
    monkeypatch.setattr(occlusion, "apply", lambda name, images, *a, **k: calls.append(len(images))
                        or real_apply(name, images, *a, **k))
    cfg = occlude.default_config()
    cfg.strategies, cfg.curves, cfg.grid_patches, cfg.residual = ("histogram",), ("morf",), 0, False
    occlude.run(_ctx(tmp_path, cfg))
    rows = {}
    for b in store.load_occluded(tmp_path / "occlude"):
        for r in range(len(b["pos"])):
            rows[(int(b["pos"][r]), int(b["method"][r]), int(b["mask"][r]))] = b["image"][r]
    copies = [k for k in rows if k[1] == 2]
    assert copies and sum(calls) <= len(rows) - len(copies)
    for p, _, i in copies:
        np.testing.assert_array_equal(rows[(p, 2, i)], rows[(p, 0, i)])


def test_strategies_that_store_predictions_or_name_another_model(tmp_path, monkeypatch):
    """A strategy declares how it is predicted: 'stored' writes p(tumor) and the logit itself (no
    image), a model name has its images re-predicted by that model; the score library follows."""
    from ibo_jax.evaluation import scoring
    from ibo_jax.stages import occlude

    monkeypatch.setenv("IBO_JAX_NO_PROGRESS", "1")

    def self_predicted(images, remove_mask, *, key=None):  # predicts itself, as token_drop does
        share = np.asarray(remove_mask).mean(axis=(1, 2))
        return {"p": 1.0 - share, "logit": np.log((1.0 - share + 1e-6) / (share + 1e-6))}

    monkeypatch.setitem(occlusion.REGISTRY, "self_predicted", self_predicted)
    monkeypatch.setitem(occlusion.REGISTRY, "retrained", occlusion.REGISTRY["mean"])
    monkeypatch.setattr(occlusion, "STRATEGIES", (*occlusion.STRATEGIES, "self_predicted", "retrained"))
    monkeypatch.setitem(occlusion.PREDICTED_BY, "self_predicted", "stored")
    monkeypatch.setitem(occlusion.PREDICTED_BY, "retrained", "roar_model")
    _fake_explain(tmp_path)
    cfg = occlude.default_config()
    cfg.strategies, cfg.curves, cfg.grid_patches = ("blackening", "self_predicted", "retrained"), ("morf",), 2
    occlude.run(_ctx(tmp_path, cfg))
    d = tmp_path / "occlude"
    layout = artifacts.read_layout(d)
    assert layout["predicted_by"] == {"blackening": "classifier", "self_predicted": "stored", "retrained": "roar_model"}
    blocks = list(artifacts.occluded_blocks(d))
    stored = [b for b in blocks if b["strategy"] == "self_predicted"]
    assert stored and all("image" not in b and len(b["p"]) == len(b["pos"]) for b in stored)
    ev, _ = artifacts.read_explained(tmp_path / "explain")

    def predictor(value):
        calls = []

        def fn(images):
            calls.append(len(images))
            n = len(images)
            return np.full(n, value, np.float32), np.zeros(n, np.float32), np.zeros((n, 4), np.float32)
        return fn, calls

    main_fn, main_calls = predictor(0.5)
    other_fn, other_calls = predictor(0.25)
    with pytest.raises(ValueError, match="predicted by model 'roar_model'"):
        scoring.score_occluded(artifacts.occluded_blocks(d), ev["image"], main_fn)
    main_calls.clear()
    res = scoring.score_occluded(artifacts.occluded_blocks(d), ev["image"], main_fn,
                                 model_predict_fns={"roar_model": other_fn})
    n = {s: sum(len(b["pos"]) for b in blocks if b["strategy"] == s) for s in ("blackening", "self_predicted", "retrained")}
    assert sum(main_calls) == n["blackening"] and sum(other_calls) == n["retrained"]
    np.testing.assert_array_equal(res[("retrained", "morf")]["p"], 0.25)
    got = res[("self_predicted", "morf")]
    np.testing.assert_allclose(got["p"], np.concatenate([b["p"] for b in stored]))
    assert "feat" not in got
    _, hm = artifacts.read_explained(tmp_path / "explain")
    table, summary = scoring.summarize_run(ev, artifacts.read_geometry(d), res, main_fn, methods=hm["methods"],
                                           controls=hm["controls"], n_boot=20)
    assert set(summary["strategies"]) == {"blackening", "self_predicted", "retrained"}
    assert "self_predicted" not in summary["kid"] and table.n_rows > 0
