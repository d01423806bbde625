"""Controls that expose known biases: each ranked method's map Gaussian-smoothed (<method>_smooth,
the blur-bias check) and with a share of its values shuffled (<method>_shuffle_<pct>, F-Fidelity's
degradation check). Their construction, their order under the counterfactual strategy on a toy
whose answer is known, the trust sections on hand-built tables, and the occlude stage running
them on the fixed-fraction curve only."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ibo_jax import occlusion
from ibo_jax.cam import controls
from ibo_jax.evaluation import levels as lv
from ibo_jax.evaluation.scores import ScoreTable
from ibo_jax.trust import checks as meta

SHARES = (0.3, 0.6, 1.0)


def _maps(n=3, m=2, size=12, seed=0):
    r = np.random.default_rng(seed)
    return r.uniform(size=(n, m, size, size)).astype(np.float16).astype(np.float32)


def test_derived_names_shapes_ranges_and_determinism():
    heat = _maps()
    index = np.array([11, 12, 13])
    names, maps, parent = controls.derive(("smooth", "shuffle"), heat, ["gradcam", "eigencam"], key=jax.random.key(0),
                                          index=index, sigma_px=1.5, shares=SHARES)
    assert names == ["gradcam_smooth", "gradcam_shuffle_30", "gradcam_shuffle_60", "gradcam_shuffle_100",
                     "eigencam_smooth", "eigencam_shuffle_30", "eigencam_shuffle_60", "eigencam_shuffle_100"]
    assert maps.shape == (3, 8, 12, 12) and maps.dtype == np.float32 and parent == [0, 0, 0, 0, 1, 1, 1, 1]
    assert maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps[:, 0].max(axis=(1, 2)), 1, atol=1e-6)  # min-max scaled
    again = controls.derive(("smooth", "shuffle"), heat, ["gradcam", "eigencam"], key=jax.random.key(0),
                            index=index, sigma_px=1.5, shares=SHARES)[1]
    np.testing.assert_array_equal(maps, again)
    # the shuffle of a patch depends on its index and method, not on the batch it is in
    part = controls.derive(("shuffle",), heat[1:], ["gradcam", "eigencam"], key=jax.random.key(0),
                           index=index[1:], sigma_px=1.5, shares=SHARES)[1]
    np.testing.assert_array_equal(part, maps[1:, [1, 2, 3, 5, 6, 7]])
    other = controls.derive(("shuffle",), heat, ["gradcam", "eigencam"], key=jax.random.key(0),
                            index=index + 1, sigma_px=1.5, shares=SHARES)[1]
    assert not np.array_equal(other[:, 0], maps[:, 1])
    # only the requested kinds, names parsed back, kinds for occlude.control_curves
    assert controls.derived_names(("smooth",), ["gradcam++"]) == ["gradcam++_smooth"]
    assert controls.derived_of("gradcam++_shuffle_60", ["gradcam++"]) == ("gradcam++", "shuffle", 0.6)
    assert controls.derived_of("gradcam_smooth", ["gradcam"]) == ("gradcam", "smooth", None)
    assert controls.derived_of("gradcam_smooth", ["eigencam"]) is None
    assert [controls.kind_of(c, ["gradcam"]) for c in ("graded_25", "random", "gradcam_smooth", "gradcam_shuffle_30",
                                                         "gradcam", "other")] == [
        "graded", "random", "smooth", "shuffle", None, None]
    with pytest.raises(ValueError, match="derived_controls"):
        controls.check_derived(("blur",))
    with pytest.raises(ValueError, match="shuffle_shares"):
        controls.check_derived(("shuffle",), (0.3, 0.301))
    with pytest.raises(ValueError, match="shuffle_shares"):
        controls.check_derived(("shuffle",), (0.0, 0.5))


def test_shuffle_moves_exactly_round_s_hw_pixels_and_keeps_the_values():
    size = 16
    r = np.random.default_rng(1)
    heat = (r.permutation(size * size).reshape(1, size, size) / 256.0).astype(np.float32)  # distinct values
    shares = (0.01, 0.3, 0.6, 1.0)
    keys = jax.random.split(jax.random.key(4), 1)
    out = controls.shuffle_maps(heat, keys, shares)
    moved = []
    for i, s in enumerate(shares):
        changed = out[0, i] != heat[0]
        assert changed.sum() == round(s * size * size), s
        np.testing.assert_array_equal(np.sort(out[0, i].ravel()), np.sort(heat[0].ravel()))
        moved.append(changed)
    for a, b in zip(moved, moved[1:]):
        assert not np.any(a & ~b)  # the shuffled sets are nested in s


def test_smooth_is_the_gaussian_filter_with_the_stated_sigma():
    from scipy.ndimage import gaussian_filter

    heat = _maps(n=2, m=1, size=20)[:, 0]
    sigma = 0.05 * 20
    out = controls.smooth_maps(heat, sigma)
    for h, o in zip(heat, out, strict=True):
        g = gaussian_filter(h, sigma, mode="nearest")
        np.testing.assert_allclose(o, (g - g.min()) / (g.max() - g.min()), atol=1e-5)
        # the same pixel order as the filtered map, and not the original's
        assert np.corrcoef(o.ravel(), g.ravel())[0, 1] > 0.9999
        assert not np.allclose(o, (h - h.min()) / (h.max() - h.min()), atol=0.05)


# --------------------------------------------------------------- the toy with a known answer


def _toy(n=12, size=24, seed=0):
    """Tumor discs (red) on blue, twins all blue; p(tumor) = share of the tumor region still red.
    Maps: gradcam = the tumor mask plus small noise (sharp and correct), eigencam = half the mask
    plus strong noise (partly correct)."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.stack([(yy - cy) ** 2 + (xx - cx) ** 2 <= rad ** 2
                     for cy, cx, rad in zip(r.uniform(6, size - 6, n), r.uniform(6, size - 6, n), r.uniform(3, 5, n))])
    img = np.zeros((n, size, size, 3), np.float32)
    img[..., 0], img[..., 2] = mask, 1.0 - mask
    twin = np.zeros_like(img)
    twin[..., 2] = 1.0
    mm = lambda x: (x - x.min(axis=(1, 2), keepdims=True)) / np.ptp(x, axis=(1, 2), keepdims=True)
    heat = np.stack([mm(mask + 0.3 * r.uniform(size=mask.shape)), mm(0.5 * mask + r.uniform(size=mask.shape))], 1)
    return mask, img, twin, heat.astype(np.float16).astype(np.float32)


def _toy_table(strategies=("counterfactual",), q=(0.05, 0.1, 0.2, 0.3, 0.5)):
    mask, img, twin, heat = _toy()
    n, size = mask.shape[:2]
    methods = ["gradcam", "eigencam"]
    names, derived, _ = controls.derive(("smooth", "shuffle"), heat, methods, key=jax.random.key(0),
                                        index=np.arange(n), sigma_px=0.05 * size, shares=SHARES)
    maps = np.concatenate([heat, derived], 1)
    allm = methods + names
    m = len(allm)
    study = ScoreTable(image_id=np.arange(n), label=np.ones(n, np.int32), methods=allm, controls=names,
                       areas={"morf": np.ones((n, m, 1))}, valid=np.ones((n, m), bool), gt_iou=np.zeros((n, m)),
                       p0=np.ones(n), logit0=np.zeros(n), fractions={"fixed": list(q)})
    for strategy in strategies:
        opts = {"twin": twin} if strategy == "counterfactual" else {"sigma_at_224": 40.0}
        rows = {k: [] for k in ("pos", "method", "mask", "draw", "p", "logit")}
        for j in range(m):
            fm = lv.fraction_masks(maps[:, j], q)  # [n, Q, H, W]
            for i in range(len(q)):
                out = np.asarray(occlusion.apply(strategy, img, fm[:, i], **opts))
                p = np.clip((out[..., 0] * mask).sum(axis=(1, 2)) / mask.sum(axis=(1, 2)), 0, 1)
                for k, v in (("pos", np.arange(n)), ("method", np.full(n, j)), ("mask", np.full(n, i + 1)),
                             ("draw", np.zeros(n, int)), ("p", p), ("logit", np.zeros(n))):
                    rows[k].append(v)
        study.add(strategy, "fixed", {k: np.concatenate(v) for k, v in rows.items()})
    return study


def test_counterfactual_orders_the_shuffle_and_smooth_controls_as_constructed():
    study = _toy_table(("counterfactual", "blurring"))
    sh = meta.shuffle(study, curves=("fixed",), n_boot=200)
    res = sh["curves"]["fixed"]["counterfactual"]
    assert sh["shares"] == [0.0, 0.3, 0.6, 1.0] and sh["curve"] == "fixed"
    assert sh["methods"]["gradcam"] == ["gradcam", "gradcam_shuffle_30", "gradcam_shuffle_60", "gradcam_shuffle_100"]
    assert res["spearman"] == pytest.approx(1.0) and res["share_methods_order_exact"] == 1.0
    for m in ("gradcam", "eigencam"):
        aucs = list(res["per_method"][m]["auc"].values())
        assert all(a < b for a, b in zip(aucs, aucs[1:])), (m, aucs)  # deletion AUC rises with s
    a = study.aucs("counterfactual", "fixed")["p"]
    g, gs = study.methods.index("gradcam"), study.methods.index("gradcam_smooth")
    assert np.all(a[:, g] <= a[:, gs] + 1e-12)  # the sharp correct map is the best there is
    bb = meta.blur_bias(study, curves=("fixed",), n_boot=200, sigma_px=1.2)
    cf = bb["curves"]["fixed"]["strategies"]["counterfactual"]
    assert cf["per_method"]["gradcam"]["mean"] <= 0 and bb["curves"]["fixed"]["reference_gain"] == cf["gain"]
    assert "excess" not in cf and "excess" in bb["curves"]["fixed"]["strategies"]["blurring"]
    assert bb["sigma_px"] == 1.2 and bb["pairs"] == {"gradcam": "gradcam_smooth", "eigencam": "eigencam_smooth"}


# --------------------------------------------------------------- hand-built tables


def _hand_table(v: dict[str, np.ndarray], methods, controls_, q=(0.5, 1.0)) -> ScoreTable:
    """v[strategy]: p(tumor) [N, M], the same at every point q (p0 = 1): AUC = 0.25 + 0.75 v."""
    n, m = next(iter(v.values())).shape
    st = ScoreTable(image_id=np.arange(n), label=np.ones(n, np.int32), methods=list(methods), controls=list(controls_),
                    areas={"morf": np.ones((n, m, 1))}, valid=np.ones((n, m), bool), gt_iou=np.zeros((n, m)),
                    p0=np.ones(n), logit0=np.zeros(n), fractions={"fixed": list(q)})
    for s, p in v.items():
        pos, meth, mask = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(m), np.arange(1, len(q) + 1),
                                                         indexing="ij"))
        st.add(s, "fixed", {"pos": pos, "method": meth, "mask": mask, "draw": np.zeros(pos.size, int),
                            "p": p[pos, meth], "logit": np.zeros(pos.size)})
    return st


METHODS = ["gradcam", "eigencam", "gradcam_smooth", "gradcam_shuffle_50", "gradcam_shuffle_100",
           "eigencam_smooth", "eigencam_shuffle_50", "eigencam_shuffle_100", "oracle"]
CONTROLS = METHODS[2:]


def _hand_values():
    n = 4
    off = 0.05 * np.arange(n)[:, None]  # patch offsets: gains and orders do not see them
    #               gc   ec   gc_s gc50 gc100 ec_s ec50 ec100 oracle
    cf = np.array([[0.2, 0.3, 0.4, 0.5, 0.8, 0.3, 0.4, 0.7, 0.0]]) + off
    bl = np.array([[0.4, 0.3, 0.2, 0.3, 0.6, 0.1, 0.5, 0.4, 0.0]]) + off
    bl[0, 2] = 0.0  # patch 0: gradcam_smooth better still under blurring
    return {"counterfactual": np.broadcast_to(cf, (n, 9)).copy(), "blurring": bl}


def test_blur_bias_and_shuffle_match_a_hand_computation():
    v = _hand_values()
    study = _hand_table(v, METHODS, CONTROLS)
    a = {s: 0.25 + 0.75 * p for s, p in v.items()}  # trapezoid AUC on x = 0, 0.5, 1
    for s in v:
        np.testing.assert_allclose(study.aucs(s, "fixed")["p"], a[s])
    bb = meta.blur_bias(study, n_boot=300, sigma_px=3.2, sigma=0.05)
    assert list(bb["curves"]) == ["fixed"] and bb["curve"] == "fixed" and bb["sigma_px"] == 3.2
    gain = {s: np.stack([a[s][:, 0] - a[s][:, 2], a[s][:, 1] - a[s][:, 5]], 1) for s in a}  # [N, 2]
    cf, bl = bb["curves"]["fixed"]["strategies"]["counterfactual"], bb["curves"]["fixed"]["strategies"]["blurring"]
    assert cf["gain"]["mean"] == pytest.approx(gain["counterfactual"].mean())  # (-0.15 + 0) / 2
    assert cf["gain"]["mean"] == pytest.approx(-0.075)
    assert bl["gain"]["mean"] == pytest.approx(gain["blurring"].mean())
    assert bl["per_method"]["gradcam"]["mean"] == pytest.approx(0.75 * (0.2 + 0.2 + 0.2 + 0.4) / 4)
    assert bl["excess"]["mean"] == pytest.approx((gain["blurring"] - gain["counterfactual"]).mean())
    assert bl["excess"]["lo"] > 0 and bl["blur_bias"] is True and bb["curves"]["fixed"]["reference_gain"] == cf["gain"]
    assert cf["gain"]["lo"] == pytest.approx(-0.075) and cf["gain"]["hi"] == pytest.approx(-0.075)  # no patch spread

    g = meta.graded_controls(study, n_boot=50)  # no graded controls here: skipped, passed beside
    sh = meta.shuffle(study, n_boot=300, graded={"curves": {"fixed": {"blurring": {"kendall_tau": 0.5}}}})
    assert "skipped" in g and sh["shares"] == [0.0, 0.5, 1.0]
    c, b = sh["curves"]["fixed"]["counterfactual"], sh["curves"]["fixed"]["blurring"]
    # counterfactual: both methods' AUCs rise with s -> rho 1 each
    assert c["per_method"]["gradcam"]["spearman"] == pytest.approx(1.0) and c["spearman"] == pytest.approx(1.0)
    # blurring: gradcam 0.4, 0.3, 0.6 -> ranks 2, 1, 3 -> rho 0.5; eigencam 0.3, 0.5, 0.4 -> 1, 3, 2 -> rho 0.5
    assert b["per_method"]["gradcam"]["spearman"] == pytest.approx(0.5)
    assert b["per_method"]["eigencam"]["spearman"] == pytest.approx(0.5)
    assert b["spearman"] == pytest.approx(0.5) and b["share_methods_order_exact"] == 0.0
    assert b["graded_kendall_tau"] == 0.5 and c["graded_kendall_tau"] is None
    assert b["per_method"]["gradcam"]["auc"]["gradcam_shuffle_50"] == pytest.approx(np.mean(a["blurring"][:, 3]))
    # the trust stage's sections: sigma from explain/heatmaps.npz, in px and as a share of the image size
    from ibo_jax.stages import trust

    sections = trust.bias_sections(study, {"image": np.zeros((4, 64, 64, 3), np.uint8)},
                                   {"smooth_sigma_px": np.float64(3.2)}, g, {"n_boot": 50, "seed": 0, "alpha": 0.05})
    assert set(sections) == {"blur_bias", "shuffle"}
    assert sections["blur_bias"]["sigma_px"] == 3.2 and sections["blur_bias"]["sigma_fraction"] == pytest.approx(0.05)
    assert sections["shuffle"]["curves"]["fixed"]["blurring"]["graded_kendall_tau"] is None  # g was skipped


def test_sections_are_skipped_with_the_reason_and_unrun_curves_left_out():
    v = _hand_values()
    plain = _hand_table({s: p[:, [0, 1, 8]] for s, p in v.items()}, ["gradcam", "eigencam", "oracle"], ["oracle"])
    assert "derived_controls lacks 'smooth'" in meta.blur_bias(plain, n_boot=10)["skipped"]
    assert "derived_controls lacks 'shuffle'" in meta.shuffle(plain, n_boot=10)["skipped"]
    # the derived controls not occluded on MoRF: that curve has no rows for them and is left out
    study = _hand_table(v, METHODS, CONTROLS)
    n, m = v["blurring"].shape
    pos, meth = (g.ravel() for g in np.meshgrid(np.arange(n), [0, 1, 8], indexing="ij"))
    study.add("blurring", "morf", {"pos": pos, "method": meth, "mask": np.ones(pos.size, int),
                                   "draw": np.zeros(pos.size, int), "p": np.full(pos.size, 0.5), "logit": np.zeros(pos.size)})
    assert list(meta.blur_bias(study, n_boot=10)["curves"]) == ["fixed"]
    assert list(meta.shuffle(study, n_boot=10)["curves"]) == ["fixed"]
    only_morf = _hand_table({"blurring": v["blurring"]}, METHODS, CONTROLS)
    only_morf.dense = {k: d for k, d in study.dense.items() if k[1] == "morf"}
    assert "no AUCs on the curves" in meta.blur_bias(only_morf, n_boot=10)["skipped"]
    # the score summary copes with the controls' empty MoRF columns (unranked, no points)
    summary = study.summarize(n_boot=20)
    assert summary["strategies"]["blurring"]["morf"]["auc"]["gradcam_smooth"]["mean"] is None
    assert summary["strategies"]["blurring"]["morf"]["ranking"].keys() == {"gradcam", "eigencam"}


# --------------------------------------------------------------- the stages


def test_occlude_runs_the_derived_controls_on_the_fixed_fraction_curve_only(tmp_path, monkeypatch):
    from ibo_jax import artifacts
    from ibo_jax.stages import occlude
    from ibo_jax_testing import stage_context, write_explained

    monkeypatch.setenv("IBO_JAX_NO_PROGRESS", "1")
    n, size = 3, 16
    r = np.random.default_rng(0)
    heat = r.uniform(size=(n, 2, size, size)).astype(np.float32)
    names, derived, _ = controls.derive(("smooth", "shuffle"), heat, ["gradcam"], key=jax.random.key(0),
                                        index=np.arange(n), sigma_px=1.0, shares=(0.5,))
    allm = ["gradcam", "random", *names]
    write_explained(tmp_path / "explain", image=r.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                    tumor_mask=np.zeros((n, size, size), bool), heat=np.concatenate([heat, derived], 1),
                    methods=allm, controls=["random", *names])
    cfg = occlude.default_config()
    cfg.strategies, cfg.curves, cfg.residual, cfg.grid_patches = ("blackening",), ("morf", "fixed"), False, 0
    cfg.fractions = (0.25, 0.5)
    ctx = stage_context("occlude", tmp_path, cfg, key=jax.random.key(0), inputs=("explain", "train_ddpm"))
    occlude.run(ctx)
    layout = artifacts.read_layout(ctx.dir)
    assert layout["control_curves"] == {"gradcam_smooth": ["fixed"], "gradcam_shuffle_50": ["fixed"]}
    seen = {}
    for b in artifacts.occluded_blocks(ctx.dir):
        seen.setdefault(b["curve"], set()).update(allm[j] for j in b["method"])
    assert seen == {"morf": {"gradcam", "random"}, "fixed": set(allm)}
    cfg.control_curves = {"smooth": ("morf",), "blur": ("fixed",)}
    with pytest.raises(ValueError, match="control_curves: unknown control kinds"):
        occlude.control_curves(cfg, allm, ["random", *names], ["morf"])
    cfg.control_curves = {"smooth": ("morf",)}
    assert occlude.control_curves(cfg, allm, ["random", *names], ["morf", "fixed"]) == {"gradcam_smooth": ["morf"]}
    # a strategy in ranked_only occludes the ranked methods only, on every curve (F-Fidelity in the demo)
    cfg.control_curves = occlude.default_config().control_curves
    cfg.strategies, cfg.ranked_only = ("blackening", "mean"), ("mean",)
    ins = {"explain": tmp_path / "explain", "train_ddpm": tmp_path / "train_ddpm"}
    ctx = stage_context("occlude", tmp_path / "ro", cfg, key=jax.random.key(0), inputs=ins)
    occlude.run(ctx)
    seen = {}
    for b in artifacts.occluded_blocks(ctx.dir):
        seen.setdefault((b["strategy"], b["curve"]), set()).update(allm[j] for j in b["method"])
    assert seen[("mean", "morf")] == seen[("mean", "fixed")] == {"gradcam"}
    assert seen[("blackening", "fixed")] == set(allm) and artifacts.read_layout(ctx.dir)["ranked_only"] == ["mean"]
    # the derived controls on the first patches only (occlude.control_images), every map elsewhere
    cfg.ranked_only, cfg.control_images = (), {"all": 1, "mean": 2}
    ctx = stage_context("occlude", tmp_path / "ci", cfg, key=jax.random.key(0), inputs=ins)
    occlude.run(ctx)
    for b in artifacts.occluded_blocks(ctx.dir):
        if b["curve"] == "fixed":
            got = {allm[j] for j, p in zip(b["method"], b["pos"]) if p >= {"mean": 2}.get(b["strategy"], 1)}
            assert got == {"gradcam", "random"}, (b["strategy"], got)
    assert artifacts.read_layout(ctx.dir)["control_images"] == {"all": 1, "mean": 2}
    cfg.control_images = {"meen": 3}
    with pytest.raises(ValueError, match="occlude.control_images: .*'meen'"):
        occlude.run(stage_context("occlude", tmp_path / "ci2", cfg, key=jax.random.key(0), inputs=ins))
    cfg.control_images = {}
    cfg.ranked_only = ("mean", "meen")
    with pytest.raises(ValueError, match="occlude.ranked_only: .*'meen'.* are no strategies"):
        occlude.run(stage_context("occlude", tmp_path / "ro2", cfg, key=jax.random.key(0), inputs=ins))


def test_explain_stage_makes_the_derived_controls(tmp_path, monkeypatch, stage_context):
    import sys
    import types

    import ml_collections
    from flax import nnx
    from test_cam import TinyNet

    from ibo_jax import artifacts
    from ibo_jax.models import loaders
    from ibo_jax.stages import explain

    n, size = 3, 16
    rs = np.random.default_rng(0)
    split = {"image": rs.integers(0, 256, (n, size, size, 3), dtype=np.uint8), "label": np.ones(n, np.int32),
             "tumor_mask": rs.uniform(size=(n, size, size)) > 0.5, "index": np.arange(100, 100 + n, dtype=np.int64),
             "slide": np.array(["s"] * n)}
    fake = types.ModuleType("ibo_jax.data.patches")
    fake.read_split = lambda data_dir, name, *, label=None, limit=None: split
    fake.counterfactual_twins = lambda data_dir, index, images: (None, "not synthetic")
    monkeypatch.setitem(sys.modules, "ibo_jax.data.patches", fake)
    monkeypatch.setattr(loaders, "load_classifier", lambda d, **kw: TinyNet(nnx.Rngs(0)))
    cfg = explain.default_config()
    assert tuple(cfg.derived_controls) == ()  # off by default: existing runs unchanged
    cfg.n_images, cfg.methods, cfg.controls = n, ("gradcam",), ("random",)
    cfg.derived_controls, cfg.smooth_sigma, cfg.shuffle_shares = ("smooth", "shuffle"), 0.1, (0.5, 1.0)
    ctx = stage_context("explain", tmp_path, cfg, ml_collections.ConfigDict({"seed": 0, "explain": cfg}),
                        key=jax.random.key(0), inputs={"data": tmp_path, "train_classifier": tmp_path})
    summary = explain.run(ctx)
    _, hm = artifacts.read_explained(ctx.dir)
    derived = ["gradcam_smooth", "gradcam_shuffle_50", "gradcam_shuffle_100"]
    assert hm["methods"] == ["gradcam", "random", *derived] and hm["controls"] == ["random", *derived]
    assert float(hm["smooth_sigma_px"]) == pytest.approx(1.6) and list(hm["shuffle_shares"]) == [0.5, 1.0]
    assert summary["derived_controls"]["smooth_sigma_px"] == pytest.approx(1.6)
    h = hm["heatmaps"].astype(np.float32)
    np.testing.assert_allclose(h[:, 2], controls.smooth_maps(h[:, 0], 1.6), atol=1e-3)  # float16 storage
    for j in (3, 4):
        np.testing.assert_array_equal(np.sort(h[:, j].reshape(n, -1), 1), np.sort(h[:, 0].reshape(n, -1), 1))
    changed = (h[:, 3] != h[:, 0]).reshape(n, -1).sum(1)
    assert np.all(changed <= 128) and np.all(changed > 64)  # s = 0.5 of 256 pixels (ties in value stay put)
    np.testing.assert_array_equal(hm["cam_valid"][:, 2:], np.repeat(hm["cam_valid"][:, :1], 3, 1))
