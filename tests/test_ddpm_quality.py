"""The DDPM check: its samples against held-out normal patches (KID between floor and gap)."""

import numpy as np

from ibo_jax import io as ibo_io
from ibo_jax import rng

S = 16


def _real_sets(n=48):
    r = np.random.default_rng(0)
    label = np.arange(n) % 2
    colour = np.where(label[:, None] == 1, [0.8, 0.3, 0.3], [0.3, 0.3, 0.8])  # tumor red, normal blue
    image = np.round(np.clip(colour[:, None, None, :] + r.normal(0, 0.05, (n, S, S, 3)), 0, 1) * 255).astype(np.uint8)
    half = n // 2
    return {"test_normal": image[label == 0][:6], "train_normal": image[label == 0][6:12],
            "test_tumor": image[label == 1][:6]}, (image, label, half)


def test_ddpm_quality_floor_gap_and_report(tmp_path, toy_eps_model, colour_classifier):
    from ibo_jax.evaluation.predict import make_predict_fn
    from ibo_jax.generator import ddpm_check
    from ibo_jax.reporting import figures, report

    real, _ = _real_sets()
    # eps = 0.5 x at DDPM size 8: the samples are smooth noise, resized to 16
    eps = toy_eps_model(image_size=8, T=100)
    predict = make_predict_fn(colour_classifier)
    q = ddpm_check.sample_quality(eps, predict, real, rng.root_key(0), n=12, steps=10)
    assert q["n"] == 6 and q["sample_steps"] == 10  # 6 normal test patches
    kid = {k: v["kid"] for k, v in q["kid"].items()}
    assert kid["train_normal"] < 0.1 * kid["test_tumor"]  # two real normal sets vs the class gap
    assert q["share_called_normal"]["test_normal"] == 1.0 and q["share_called_normal"]["test_tumor"] == 0.0
    assert np.isfinite(kid["samples"]) and 0.0 <= q["p_tumor_mean"]["samples"] <= 1.0
    text = report.render_markdown({"strategies": {}, "methods": [], "gt": {"iou": {}, "ranking": {}}}, ddpm_check=q)
    assert "| DDPM samples |" in text and "noise floor" in text
    assert figures.figure_ddpm_quality(q, tmp_path / "q.png")
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"
    assert not figures.figure_ddpm_quality({}, tmp_path / "none.png")
    ibo_io.write_json(tmp_path / "q.json", q)  # plain JSON


def test_ddpm_check_stage_writes_its_summary(tmp_path, monkeypatch, stage_context, toy_eps_model, colour_classifier):
    """The check is a stage of its own (changing it does not rerun the scoring)."""
    import ml_collections

    from ibo_jax.data.patches import ArraySource, write_dataset
    from ibo_jax.models import loaders
    from ibo_jax.stages import ddpm_check

    _, (image, label, _) = _real_sets()
    n = len(label)
    split = np.array(["train", "train", "test", "test", "train", "train", "val", "val"] * (n // 8))
    write_dataset(ArraySource(arrays={
        "image": image, "label": label, "split": split,
        "tumor_mask": np.repeat((label == 1)[:, None, None], S, 1).repeat(S, 2),
        "index": np.arange(n), "slide": np.array(["s"] * n)}), tmp_path / "data")
    eps = toy_eps_model(image_size=8, T=100)
    monkeypatch.setattr(loaders, "load_eps_model", lambda *a, **k: eps)
    monkeypatch.setattr(loaders, "load_classifier", lambda *a, **k: colour_classifier)
    cfg = ddpm_check.default_config()
    cfg.n_samples, cfg.sample_steps = 12, 10
    ctx = stage_context("ddpm_check", tmp_path, cfg, ml_collections.ConfigDict({"seed": 0}), key=rng.root_key(0),
                        inputs=("data", "train_classifier", "train_ddpm"))
    ddpm_check.run(ctx)
    q = ibo_io.read_json(tmp_path / "ddpm_check" / "summary.json")
    assert q["n"] == 6 and set(q["kid"]) == {"samples", "train_normal", "test_tumor"}
