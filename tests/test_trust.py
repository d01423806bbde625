"""Known-answer checks of the meta-evaluation: twins are normal to a model that counts tumor
nuclei, the counterfactual strategy recovers the graded controls' order on a toy model whose logit
is monotone in the tumor pixels left, Eigen-CAM ignores the head under randomization while
Grad-CAM does not, and the run's resolution shrinks as patches are added."""

from __future__ import annotations

import numpy as np
import pytest

from ibo_jax import occlusion
from ibo_jax.cam import controls
from ibo_jax.data import synthetic
from ibo_jax.evaluation import levels as lv
from ibo_jax.evaluation.scores import ScoreTable
from ibo_jax.trust import checks as meta


def _count_tumor_nuclei(images: np.ndarray) -> np.ndarray:
    """A model that counts tumor nuclei: dark pixels that survive a 4x4 erosion (tumor nuclei
    are 6-8 px across at 64 px, lymphocytes about 3) -> p(tumor)."""
    from scipy import ndimage

    dark = images.astype(np.float32).mean(-1) < 110
    big = np.stack([ndimage.binary_erosion(d, np.ones((4, 4))) for d in dark])
    return 1.0 / (1.0 + np.exp(-(big.mean(axis=(1, 2)) - 0.003) * 4000.0))


def test_twins_are_called_normal_by_a_tumor_nucleus_counter():
    d = synthetic.generate(np.arange(96), seed=5, counterfactual=True)
    tumor, normal = d["label"] == 1, d["label"] == 0
    p_img, p_twin = _count_tumor_nuclei(d["image"]), _count_tumor_nuclei(d["twin"])
    assert np.mean(p_img[tumor] > 0.5) > 0.9  # the counter sees the tumor ...
    assert np.mean(p_img[normal] < 0.5) > 0.9 and np.mean(p_twin[tumor] < 0.5) > 0.9  # ... and no tumor in twins


def test_counterfactual_recovers_the_graded_order_on_a_monotone_toy_model():
    """Tumor pixels red, their twin blue; logit = 8 * (share of red pixels left) - 2: the fixed-
    fraction AUC under the counterfactual strategy must rise with the share a made random."""
    import jax

    d = synthetic.generate(np.arange(48), seed=2)
    keep = d["label"] == 1
    mask = d["tumor_mask"][keep]
    n, s = mask.shape[:2]
    img = np.where(mask[..., None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]).astype(np.float32)
    twin = np.broadcast_to(np.array([0.0, 0.0, 1.0], np.float32), img.shape).copy()
    names, maps = controls.make(("graded",), key=jax.random.key(0), index=d["index"][keep], tumor_mask=mask)
    q = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
    m = len(names)
    study = ScoreTable(image_id=np.arange(n), label=np.ones(n, np.int32), methods=names, controls=names,
                  areas={"morf": np.ones((n, m, 1))}, valid=np.ones((n, m), bool), gt_iou=np.zeros((n, m)),
                  p0=np.full(n, 0.5), logit0=np.zeros(n), fractions={"fixed": list(q)})
    rows = {k: [] for k in ("pos", "method", "mask", "draw", "p", "logit")}
    for j in range(m):
        fm = lv.fraction_masks(maps[:, j], q)  # [n, Q, H, W]
        for i in range(len(q)):
            out = np.asarray(occlusion.apply("counterfactual", img, fm[:, i], twin=twin))
            logit = 8.0 * out[..., 0].mean(axis=(1, 2)) - 2.0
            for k, v in (("pos", np.arange(n)), ("method", np.full(n, j)), ("mask", np.full(n, i + 1)),
                         ("draw", np.zeros(n, int)), ("p", 1 / (1 + np.exp(-logit))), ("logit", logit)):
                rows[k].append(v)
    study.add("counterfactual", "fixed", {k: np.concatenate(v) for k, v in rows.items()})
    g = meta.graded_controls(study, curves=("fixed",), n_boot=200)
    res = g["curves"]["fixed"]["counterfactual"]
    assert g["levels"] == [0.0, 0.25, 0.5, 0.75, 1.0] and res["kendall_tau"] == 1.0
    aucs = [res["auc"][nm] for nm in g["names"]]
    assert all(a < b for a, b in zip(aucs, aucs[1:]))


def test_randomization_eigencam_ignores_the_head_gradcam_does_not():
    from flax import nnx

    from ibo_jax import models
    from ibo_jax.trust import randomization

    kw = dict(widths=(8, 16, 32), layers=(1, 1, 1), strides=(2, 2, 2))
    model = models.resnet_small(2, rngs=nnx.Rngs(0), **kw)
    model.eval()
    images = synthetic.generate(np.arange(6), seed=1)["image"]
    res = randomization.cascade(model, lambda seed: models.resnet_small(2, rngs=nnx.Rngs(50 + seed), **kw), images,
                                methods=("gradcam", "eigencam"))
    head = res["steps"][0]
    assert head["randomized"] == "fc" and res["groups_forward_order"][0] == "conv1"
    assert head["similarity"]["eigencam"]["spearman"] == pytest.approx(1.0)
    assert head["similarity"]["eigencam"]["ssim"] == pytest.approx(1.0, abs=1e-5)
    g = head["similarity"]["gradcam"]["spearman"]
    assert not np.isfinite(g) or g < 0.9  # the head's gradient sets Grad-CAM's weights
    assert set(res["floor"]) == {"gradcam", "eigencam"}


def _noisy_study(n: int, seed: int = 0) -> ScoreTable:
    """7 methods with true quality ordered; two strategies whose AUCs carry patch noise."""
    from ibo_jax import cam

    r = np.random.default_rng(seed)
    methods = list(cam.METHODS)
    m = len(methods)
    quality = np.linspace(0.6, 0.4, m)
    st = ScoreTable(image_id=np.arange(n), label=np.ones(n, np.int32), methods=methods, controls=[],
               areas={"morf": np.broadcast_to(np.linspace(0.1, 0.4, 4), (n, m, 4)).copy()},
               valid=np.ones((n, m), bool), gt_iou=quality[None] + 0.05 * r.normal(size=(n, m)),
               p0=np.full(n, 0.95), logit0=np.full(n, 3.0))
    for strategy, noise in (("a", 0.3), ("b", 0.5), ("counterfactual", 0.3)):
        pos, meth, mask = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(m), np.arange(1, 5), indexing="ij"))
        p = np.clip(0.95 * np.exp(-quality[meth] * mask) + noise * r.normal(size=pos.size), 0, 1)
        st.add(strategy, "morf", {"pos": pos, "method": meth, "mask": mask, "draw": np.zeros(pos.size, int),
                                  "p": p, "logit": np.log(np.clip(p, 1e-6, 1) / np.clip(1 - p, 1e-6, 1))})
    return st


def test_resolution_shrinks_as_patches_are_added():
    small = meta.power(_noisy_study(12), n_boot=300)  # against the counterfactual reference
    large = meta.power(_noisy_study(96), n_boot=300)
    assert large["resolution"] < small["resolution"] and small["patches_needed"] >= 12
    rows = large["subsampling"]["rows"]
    assert [r["n"] for r in rows] == [24, 48, 96] and rows[0]["half_width"] > rows[-1]["half_width"]
    assert "decisive" in large["sentence"].lower() and set(large["tests"]) == {"a vs b"}
    assert all(0 <= t["p_holm"] <= 1 for t in large["tests"].values())
    cf = meta.counterfactual_agreement(_noisy_study(24), curves=("morf",), n_boot=200)
    entry = cf["curves"]["morf"]["strategies"]["a"]
    assert set(cf["curves"]["morf"]["strategies"]) == {"a", "b"} and 0 <= entry["mard"] <= 6
    assert "a<b" in cf["curves"]["morf"]["paired_mard_tests"]
    within = entry["within_patch"]
    assert -1 <= within["lo"] <= within["mean"] <= within["hi"] <= 1 and within["n"] == 24
    pw = cf["curves"]["morf"]["pairwise"]
    (row,) = pw["rows"]
    assert {row["a"], row["b"]} == {"a", "b"} and row["verdict"] in ("separated", "equivalent", "undecided")
    assert sum(pw["counts"].values()) == 1 and pw["margin"] == pytest.approx(0.1)


def test_report_opens_with_the_faithfulness_verdict_when_there_is_a_known_answer():
    from ibo_jax.reporting import report

    trust = {"counterfactual": {"curves": {"morf": {
        "strategies": {"ibo": {"within_patch": {"mean": 0.6}, "mard": 0.5},
                       "blackening": {"within_patch": {"mean": -0.2}, "mard": 2.1},
                       "mean": {"within_patch": {"mean": 0.55}, "mard": 0.6}},
        "pairwise": {"rows": [{"a": "blackening", "b": "ibo", "difference": -0.8, "verdict": "separated"},
                              {"a": "blackening", "b": "mean", "difference": -0.75, "verdict": "separated"},
                              {"a": "ibo", "b": "mean", "difference": 0.05, "verdict": "equivalent"}],
                     "counts": {"separated": 2, "equivalent": 1, "undecided": 0}}}}}}
    line = report.faithfulness_verdict(trust)
    assert "comes from **ibo** (within-patch Kendall's tau 0.60, MARD 0.50)" in line
    assert "separated from 1 of the 2 other strategies (blackening)" in line
    assert "2 are separated, 1 equivalent, 0 undecided" in line and "Order: ibo 0.60, mean 0.55, blackening -0.20" in line
    assert report.faithfulness_verdict({"counterfactual": {"unavailable": "no twins"}}) == ""


def test_randomization_compiles_each_method_once_whatever_the_weights_placement():
    """A restored checkpoint's weights carry a NamedSharding, a fresh model's a
    SingleDeviceSharding: the cascade places the fresh weights like the trained ones, so every
    step reuses one compilation per method instead of one per mix of placements."""
    import jax
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from ibo_jax import models
    from ibo_jax.attribution import base
    from ibo_jax.trust import randomization

    kw = dict(widths=(4, 8), layers=(1, 1), strides=(2, 2))
    model = models.resnet_small(2, rngs=nnx.Rngs(0), **kw)
    model.eval()
    named = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), PartitionSpec())
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, jax.device_put(state, named))
    fresh = lambda seed: models.resnet_small(2, rngs=nnx.Rngs(50 + seed), **kw)  # noqa: E731
    mixed = randomization.randomized(model, fresh(1), ["fc"])
    placed = {str(leaf.sharding) for leaf in jax.tree.leaves(nnx.state(mixed)) if isinstance(leaf, jax.Array)}
    assert placed == {str(named)}
    images = synthetic.generate(np.arange(2), seed=1)["image"]
    plain = models.resnet_small(2, rngs=nnx.Rngs(0), **kw)  # uncommitted weights, as built
    plain.eval()
    for trained in (model, plain):
        before = base._compute_jit._cache_size()
        res = randomization.cascade(trained, fresh, images, methods=("saliency",))
        assert len(res["steps"]) >= 3
        assert base._compute_jit._cache_size() - before == 1
