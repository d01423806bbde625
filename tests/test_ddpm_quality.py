"""Score stage: the DDPM's samples against held-out normal patches (KID between floor and gap)."""

import jax.numpy as jnp
import numpy as np
from test_repaint_sweep import _ColourClassifier

from ibo_jax import io as ibo_io
from ibo_jax import pipeline, rng

S = 16


def test_ddpm_quality_floor_gap_and_report(tmp_path, monkeypatch):
    import ml_collections

    from ibo_jax.data.patches import ArraySource, write_dataset
    from ibo_jax.evaluation import report
    from ibo_jax.stages import score
    from ibo_jax.train import ddpm

    r = np.random.default_rng(0)
    n = 48
    label = np.arange(n) % 2
    colour = np.where(label[:, None] == 1, [0.8, 0.3, 0.3], [0.3, 0.3, 0.8])  # tumor red, normal blue
    image = np.clip(colour[:, None, None, :] + r.normal(0, 0.05, (n, S, S, 3)), 0, 1)
    split = np.array(["train", "train", "test", "test", "train", "train", "val", "val"] * (n // 8))
    write_dataset(ArraySource(arrays={
        "image": np.round(image * 255).astype(np.uint8), "label": label, "split": split,
        "tumor_mask": np.repeat((label == 1)[:, None, None], S, 1).repeat(S, 2),
        "index": np.arange(n), "slide": np.array(["s"] * n)}), tmp_path / "data")
    # eps = 0.5 x at DDPM size 8: the samples are smooth noise, resized to 16
    eps = ddpm.EpsModel(apply=lambda params, x, t: params["a"] * x, params={"a": jnp.float32(0.5)},
                        betas=np.linspace(1e-4, 0.02, 100).astype(np.float32), image_size=8)
    monkeypatch.setattr(ddpm, "load_eps_model", lambda *a, **k: eps)
    cfg = score.default_config()
    ctx = pipeline.StageContext(name="score", dir=tmp_path / "score", workdir=tmp_path, cfg=cfg,
                                config=ml_collections.ConfigDict({"seed": 0}), key=rng.root_key(0), mesh=None,
                                inputs={"data": tmp_path / "data", "train_ddpm": tmp_path / "train_ddpm"})
    predict = score.make_predict_fn(_ColourClassifier())
    q = score.ddpm_quality(ctx, predict, 12, 10)
    assert q["n"] == 6 and q["sample_steps"] == 10  # 6 normal test patches
    kid = {k: v["kid"] for k, v in q["kid"].items()}
    assert kid["train_normal"] < 0.1 * kid["test_tumor"]  # two real normal sets vs the class gap
    assert q["share_called_normal"]["test_normal"] == 1.0 and q["share_called_normal"]["test_tumor"] == 0.0
    assert np.isfinite(kid["samples"]) and 0.0 <= q["p_tumor_mean"]["samples"] <= 1.0
    text = "".join(report._ddpm_section(q))
    assert "| DDPM samples |" in text and "noise floor" in text
    assert report.figure_ddpm_quality({"ddpm_quality": q}, tmp_path / "q.png")
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"
    assert not report.figure_ddpm_quality({}, tmp_path / "none.png")
    ibo_io.write_json(tmp_path / "q.json", q)  # plain JSON (the summary holds it)
