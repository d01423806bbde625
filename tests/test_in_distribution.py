"""How in-distribution is each fill (`ibo_jax.trust.in_distribution`): R-OMS equals its closed form
on a toy classifier whose probability is a function of the mean intensity, the reference strategy
scores 1, the Mahalanobis distance of a fitted Gaussian is chi-square distributed, its percentile
among real test patches is uniform for fresh patches and near 100 far away, and the trust stage
writes `in_distribution.strategies.<s>.ood_percentile` / `.r_oms`."""

from __future__ import annotations

import numpy as np
import pytest

from ibo_jax.evaluation.scores import ScoreTable
from ibo_jax.trust import in_distribution as ind

A, C0 = 6.0, 0.4  # toy classifier: p = sigmoid(A (mean intensity - C0))
HW = 8 * 8
FILL = {"blackening": 0.0, "mean": 0.5, "counterfactual": 0.2}  # the counterfactual fill: the twin's value


def _toy_p(images: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-A * (images.mean(axis=(1, 2, 3)) - C0)))


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def _toy_study(v0: np.ndarray, counts: np.ndarray, *, strategies=tuple(FILL), feat=None, curve: str = "morf",
              fractions=None) -> ScoreTable:
    """Constant grey images of intensity v0 [N] on 8x8 pixels; method j's nested masks remove the
    first counts[i, j, k] pixels (raster order) at point k+1; each strategy fills them with its
    constant and the toy classifier scores the filled image. Methods: 'a', 'b' ranked, 'ctl' a control."""
    n, m, n_pts = counts.shape
    st = ScoreTable(image_id=np.arange(n), label=np.ones(n, np.int32), methods=["a", "b", "ctl"], controls=["ctl"],
                    areas={"morf": counts / HW}, valid=np.ones((n, m), bool), gt_iou=np.zeros((n, m)),
                    p0=_toy_p(np.broadcast_to(v0[:, None, None, None], (n, 8, 8, 3))), logit0=np.zeros(n),
                    fractions={} if fractions is None else {curve: list(fractions)})
    if n > 1:
        st.valid[1, 0] = False  # one unusable heatmap: left out of every mean
    for s in strategies:
        rows = {k: [] for k in ("pos", "method", "mask", "draw", "p", "logit")}
        for i in range(n):
            for j in range(m):
                for k in range(n_pts):
                    img = np.full((HW, 3), v0[i])
                    img[: counts[i, j, k]] = FILL[s]
                    p = float(_toy_p(img.reshape(1, 8, 8, 3))[0])
                    if j == 2:
                        p = 1.0 - p  # a control with nonsense outputs: must not enter anything
                    for key, v in (("pos", i), ("method", j), ("mask", k + 1), ("draw", 0), ("p", p),
                                   ("logit", np.log(p / (1 - p)))):
                        rows[key].append(v)
        rows = {k: np.asarray(v) for k, v in rows.items()}
        if feat is not None:
            rows["feat"] = feat(s, len(rows["p"]))
        st.add(s, curve, rows)
    return st


def _closed_form(v0, counts, fill, fractions=None) -> tuple[np.ndarray, dict]:
    """Per patch mean over the ranked valid methods of the normalized trapezoid area of
    1 - |sigmoid(A((1-f) v0 + f b - C0)) - sigmoid(A((1-f) v0 + f t - C0))|, f = count / HW,
    x = count / last count (MoRF) or the fixed fraction q; computed by hand, point by point."""
    per_patch, per_method = [], {"a": [], "b": []}
    for i in range(len(v0)):
        vals = []
        for j, name in enumerate(("a", "b")):
            if i == 1 and j == 0:
                continue
            xs, ss = [0.0], [1.0]
            for k, c in enumerate(counts[i, j]):
                f = c / HW
                mean_s = (1 - f) * v0[i] + f * fill
                mean_r = (1 - f) * v0[i] + f * FILL["counterfactual"]
                xs.append(c / counts[i, j, -1] if fractions is None else fractions[k])
                ss.append(1.0 - abs(_sig(A * (mean_s - C0)) - _sig(A * (mean_r - C0))))
            area = sum((xs[k] - xs[k - 1]) * (ss[k] + ss[k - 1]) / 2 for k in range(1, len(xs)))
            vals.append(area / (xs[-1] - xs[0]))
            per_method[name].append(vals[-1])
        per_patch.append(sum(vals) / len(vals))
    return np.array(per_patch), {k: float(np.mean(v)) for k, v in per_method.items()}


def _counts(n: int, n_pts: int, seed: int = 0) -> np.ndarray:
    r = np.random.default_rng(seed)
    steps = r.integers(1, 6, (n, 3, n_pts))
    return np.cumsum(steps, axis=-1)  # nested, different per image and method


@pytest.mark.parametrize("curve", ["morf", "fixed"])
def test_r_oms_equals_its_closed_form_on_a_toy_classifier(curve):
    """MoRF: x = |M_i| / |M_n| in [0, 1]; fixed: x = q up to 0.5, so the area is divided by 0.5."""
    v0 = np.array([0.9, 0.7, 0.55, 0.8])
    q = (0.1, 0.3, 0.5) if curve == "fixed" else None
    counts = _counts(len(v0), 4) if q is None else np.broadcast_to(np.round(np.array(q) * HW).astype(int), (4, 3, 3)).copy()
    res = ind.r_oms(_toy_study(v0, counts, curve=curve, fractions=q), curve=curve, n_boot=200)
    assert res["similarity"] == "1 - |p - p_ref|" and res["reference"] == "counterfactual" and res["curve"] == curve
    for s in ("blackening", "mean"):
        want, per_method = _closed_form(v0, counts, FILL[s], fractions=q)
        got = res["strategies"][s]
        assert got["auc"]["mean"] == pytest.approx(want.mean(), abs=1e-12)
        assert got["auc"]["n"] == len(v0) and got["auc"]["lo"] <= got["auc"]["mean"] <= got["auc"]["hi"]
        assert got["per_method"]["a"] == pytest.approx(per_method["a"], abs=1e-12)
        assert got["per_method"]["b"] == pytest.approx(per_method["b"], abs=1e-12)
        assert "ctl" not in got["per_method"] and not got["is_reference"]
        assert got["mean_similarity_per_point"][0] == 1.0 and 0 < got["auc"]["mean"] < 1
    # blackening moves p further from the twin's fill (0.2) than the mean fill (0.5) on bright patches
    assert res["strategies"]["blackening"]["auc"]["mean"] != pytest.approx(res["strategies"]["mean"]["auc"]["mean"])
    ref = res["strategies"]["counterfactual"]
    assert ref["is_reference"] and ref["auc"]["mean"] == 1.0 and ref["auc"]["lo"] == ref["auc"]["hi"] == 1.0


def test_r_oms_approaches_the_integral_on_a_fine_curve():
    """Many masks: the normalized area is the integral of 1 - |p(x) - p_ref(x)| over x in [0, 1]."""
    from scipy.integrate import quad

    v0, n_pts = np.array([0.85]), 32
    counts = np.broadcast_to(2 * np.arange(1, n_pts + 1), (1, 3, n_pts)).copy()  # up to 64 px: everything
    res = ind.r_oms(_toy_study(v0, counts, strategies=("blackening", "counterfactual")), n_boot=20)

    def s(x):  # f = x: the last mask is the whole patch
        return 1 - abs(_sig(A * ((1 - x) * v0[0] - C0)) - _sig(A * ((1 - x) * v0[0] + x * 0.2 - C0)))

    want, _ = quad(s, 0, 1)
    assert res["strategies"]["blackening"]["auc"]["mean"] == pytest.approx(want, abs=2e-3)


def test_r_oms_unavailable_without_the_reference_and_why_not_the_cosine():
    counts = _counts(2, 3)
    res = ind.r_oms(_toy_study(np.array([0.8, 0.6]), counts, strategies=("blackening",)), n_boot=20)
    assert "unavailable" in res and "counterfactual" in res["unavailable"]
    cos = lambda p, q: ((1 - p) * (1 - q) + p * q) / np.hypot(1 - p, p) / np.hypot(1 - q, q)  # noqa: E731
    assert cos(0.0, 0.1) == pytest.approx(0.994, abs=5e-4) and cos(0.5, 0.6) == pytest.approx(0.981, abs=5e-4)
    assert abs(cos(0.0, 0.1) - cos(0.5, 0.6)) > 0.01  # same |p - p_ref|, different cosine (the docstring's claim)


def _gaussians(seed: int = 0, c: int = 8):
    r = np.random.default_rng(seed)
    a = r.normal(size=(c, c))
    cov = a @ a.T + 0.2 * np.eye(c)  # anisotropic: a Euclidean distance would not be chi-square
    means = np.stack([np.zeros(c), 40.0 * np.ones(c) / np.sqrt(c) * np.sqrt(np.trace(cov) / c)])  # far apart

    def draw(n, rr, far=False):  # far: class-0 patches moved 20 standard deviations away from both classes
        y = np.zeros(n, np.int64) if far else rr.integers(0, 2, n)
        return means[y] + rr.multivariate_normal(np.zeros(c), cov, n) - (20 * np.sqrt(np.diag(cov)) if far else 0), y

    return draw, cov


def test_mahalanobis_percentile_of_real_test_patches_is_uniform():
    from scipy import stats

    draw, cov = _gaussians()
    r = np.random.default_rng(1)
    x_train, y_train = draw(20000, r)
    fit = ind.fit_gaussians(x_train, y_train)
    assert fit.method == "ledoit_wolf" and 0 <= fit.shrinkage < 0.01 and fit.precision.dtype == np.float64
    assert fit.summary()["C"] == 8 and fit.summary()["n_per_class"].keys() == {"0", "1"}
    ref_d = ind.mahalanobis(draw(2000, r)[0], fit)  # the real test patches
    fresh_d = ind.mahalanobis(draw(2000, r)[0], fit)  # more real patches
    # the distance itself: d^2 ~ chi2(C) under the fitted Gaussians (needs the precision, not the identity)
    assert stats.kstest(fresh_d**2, stats.chi2(8).cdf).statistic < 0.04
    eucl = ind.GaussianFit(fit.classes, fit.means, np.eye(8), np.eye(8), 0.0, "fixed", {})
    assert stats.kstest(ind.mahalanobis(draw(2000, r)[0], eucl) ** 2, stats.chi2(8).cdf).statistic > 0.2
    # the reference's own percentiles are the uniform grid; fresh patches' are uniform on [0, 100]
    assert np.array_equal(np.sort(ind.percentile(ref_d, ref_d)), 100.0 * np.arange(1, 2001) / 2000)
    pct = ind.percentile(fresh_d, ref_d)
    assert stats.kstest(pct / 100.0, "uniform").statistic < 0.05
    deciles = np.histogram(pct, bins=np.linspace(0, 100, 11))[0]
    assert deciles.min() > 140 and deciles.max() < 260
    assert 47 < pct.mean() < 53
    # far away: near 100
    far = ind.percentile(ind.mahalanobis(draw(500, r, far=True)[0], fit), ref_d)
    assert far.min() >= 99.0
    assert np.isnan(ind.percentile(np.array([np.nan]), ref_d)[0])


def test_fit_gaussians_shrinkage_is_what_it_says():
    r = np.random.default_rng(3)
    x, y = r.normal(size=(60, 5)) * [1, 2, 3, 4, 5], r.integers(0, 2, 60)
    means = np.stack([x[y == k].mean(0) for k in (0, 1)])
    s = (x - means[y]).T @ (x - means[y]) / len(x)
    f0 = ind.fit_gaussians(x, y, shrinkage=0.0)
    assert np.allclose(f0.cov, s) and np.allclose(f0.means, means) and np.allclose(f0.precision @ s, np.eye(5))
    f1 = ind.fit_gaussians(x, y, shrinkage=1.0)
    assert np.allclose(f1.cov, np.trace(s) / 5 * np.eye(5))
    lw = ind.fit_gaussians(x, y)
    sk = pytest.importorskip("sklearn.covariance")
    _, a = sk.ledoit_wolf(x - means[y], assume_centered=True)
    assert lw.shrinkage == pytest.approx(a, rel=1e-9) and 0 < lw.shrinkage < 1
    # more features than rows: still invertible
    wide = ind.fit_gaussians(r.normal(size=(10, 40)), np.arange(10) % 2)
    assert np.all(np.isfinite(wide.precision)) and wide.shrinkage > 0
    with pytest.raises(ValueError, match="shrinkage"):
        ind.fit_gaussians(x, y, shrinkage=1.5)


def test_ood_scores_in_distribution_fill_near_50_far_fill_near_100():
    draw, cov = _gaussians(c=8)
    r = np.random.default_rng(4)
    fit = ind.fit_gaussians(*draw(4000, r))
    ref_d = ind.mahalanobis(draw(1000, r)[0], fit)
    v0 = np.linspace(0.5, 0.9, 40)
    counts = _counts(len(v0), 3)

    def feat(strategy, n_rows):  # rows ordered image, method, mask (3 masks)
        f = draw(n_rows, r, far=strategy == "blackening")[0]
        if strategy == "mean":
            control = (np.arange(n_rows) // 3) % 3 == 2
            f[control] = draw(int(control.sum()), r, far=True)[0]  # far-off controls: left out
        return f if strategy != "counterfactual" else np.zeros((n_rows, 0), np.float32)

    st = _toy_study(v0, counts, feat=feat)
    feat0 = draw(40, r)[0]
    res = ind.ood_scores(st, fit, ref_d, feat0=feat0, n_boot=200)
    mean, black = res["strategies"]["mean"], res["strategies"]["blackening"]
    assert 40 < mean["mean"] < 60 and mean["lo"] < 50 < mean["hi"] and mean["share_above_95"] < 0.12
    assert black["mean"] > 99 and black["share_above_95"] == 1.0
    assert len(mean["per_mask"]) == 3 and all(40 < v < 60 for v in mean["per_mask"])
    assert mean["n"] == 40 * 2 * 3  # ranked methods only, all masks
    assert "unavailable" in res["strategies"]["counterfactual"]  # no features of its fills
    assert 30 < res["original"]["mean"] < 70
    public = ind.per_strategy(res, ind.r_oms(st, n_boot=20))
    assert public["mean"]["ood_percentile"] == mean["mean"] and public["counterfactual"]["r_oms"] == 1.0
    assert public["counterfactual"]["ood_percentile"] is None


def test_trust_stage_writes_the_in_distribution_section(tmp_path, monkeypatch, stage_context):
    """The stage end to end on toy inputs: real score and explain files, the classifier and the data
    folder stood in by a predictor whose features are the first 8 pixel values."""
    import ml_collections

    from ibo_jax import artifacts
    from ibo_jax import io as ibo_io
    from ibo_jax.stages import trust as stage
    from ibo_jax_testing import write_explained

    r = np.random.default_rng(0)
    v0 = np.linspace(0.5, 0.9, 6)
    counts = _counts(len(v0), 3)

    def feat(strategy, n_rows):
        base = r.integers(0, 256, (n_rows, 8)).astype(np.float32)
        return np.zeros_like(base) if strategy == "blackening" else base

    st = _toy_study(v0, counts, feat=feat)
    artifacts.write_score_arrays(tmp_path / "score", artifacts.ScoreArrays(
        table=st, feat0=r.integers(0, 256, (6, 8)).astype(np.float32), twin_p=np.full(6, 0.1)))
    heat = r.random((6, 3, 8, 8)).astype(np.float32)
    write_explained(tmp_path / "explain", image=r.integers(0, 256, (6, 8, 8, 3)), tumor_mask=np.zeros((6, 8, 8), bool),
                    heat=heat, methods=["a", "b", "ctl"], controls=["ctl"])
    calls = []

    def fake_read_split(data_dir, split, *, label=None, limit=None):
        calls.append((split, label, limit))
        n = min(int(limit), 40 if split == "train" else 30)
        return {"image": np.random.default_rng(10 * (split == "train") + (label or 0)).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8),
                "label": np.full(n, 0 if label is None else label, np.int32)}

    def fake_predict_fn(model, *, tumor_class=1, batch_size=32):
        def fn(images):
            f = images.reshape(len(images), -1)[:, :8].astype(np.float32)
            p = np.full(len(images), 0.2)
            return p, np.log(p / (1 - p)), f
        return fn

    monkeypatch.setattr(stage, "read_split", fake_read_split)
    monkeypatch.setattr(stage, "make_predict_fn", fake_predict_fn)
    monkeypatch.setattr(stage.loaders, "load_classifier", lambda d: object())
    cfg = stage.default_config()
    cfg.n_boot, cfg.randomization_images = 50, 0
    assert cfg.ood_train_patches == 512 and cfg.ood_test_patches == 256
    cfg.ood_train_patches, cfg.ood_test_patches = 64, 40
    config = ml_collections.ConfigDict({"seed": 0, "tumor_class": 1})
    ctx = stage_context("trust", tmp_path, cfg, config, inputs=("data", "train_classifier", "explain", "score"))
    stage.run(ctx)
    assert ("train", 0, 32) in calls and ("train", 1, 32) in calls and ("test", 0, 20) in calls and ("test", 1, 20) in calls
    sec = ibo_io.read_json(tmp_path / "trust" / "summary.json")["in_distribution"]
    pub = sec["strategies"]
    assert set(pub) == {"blackening", "mean", "counterfactual"}
    assert all(set(v) == {"ood_percentile", "r_oms"} for v in pub.values())
    assert pub["counterfactual"]["r_oms"] == 1.0 and 0 < pub["blackening"]["r_oms"] < 1
    assert pub["blackening"]["ood_percentile"] > 95 and 20 < pub["mean"]["ood_percentile"] < 80
    assert sec["reference_test_patches"] == 40 and sec["train_patches"] == 64
    assert sec["fit"]["C"] == 8 and 0 <= sec["fit"]["shrinkage"] <= 1
    assert sec["r_oms"]["similarity"] == "1 - |p - p_ref|"
    # 0 training patches: the section says it was skipped (and reads nothing)
    cfg.ood_train_patches = 0
    assert stage.in_distribution_section(ctx, cfg, artifacts.read_score_arrays(tmp_path / "score"),
                                         n_boot=10, seed=0, alpha=0.05) == {"skipped": "trust.ood_train_patches = 0"}
    # an older config without the fields: the defaults
    old = ml_collections.ConfigDict({k: v for k, v in cfg.items() if not k.startswith("ood_")})
    calls.clear()
    stage.in_distribution_section(ctx, old, artifacts.read_score_arrays(tmp_path / "score"), n_boot=10, seed=0, alpha=0.05)
    assert ("train", 0, 256) in calls and ("test", 1, 128) in calls
