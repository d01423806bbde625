"""Stage `ddpm_check`: the DDPM's own samples against held-out normal patches, in the classifier's
feature space (`ibo_jax.evaluation.ddpm_check`).

Inputs: `data` (normal test and train patches, tumor test patches), `train_classifier`,
`train_ddpm`. Output: `ddpm_check/summary.json` (KID of the samples beside the real-data floor
and the tumor-normal gap, mean p(tumor) and share called normal per set). A stage of its own, so
changing the number of samples reruns only this check, never the scoring.
"""

from __future__ import annotations

import time

import ml_collections

from ibo_jax import artifacts, rng
from ibo_jax.evaluation.predict import make_predict_fn
from ibo_jax.generator.ddpm_check import sample_quality
from ibo_jax.models import loaders


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.n_samples = 64  # samples, and at most this many real patches per reference set
    c.sample_steps = 50  # respaced ancestral steps
    c.kid_subset_size = 100  # KID's mean and standard deviation over subsets of this size (0: one estimate)
    c.batch_size = 32
    return c


def run(ctx) -> dict:
    from ibo_jax.data.patches import read_split

    t0 = time.time()
    cfg = ctx.cfg
    if ctx.process_index != 0:
        return {"skipped": "not process 0"}
    n = int(cfg.n_samples)
    if n < 2:
        raise ValueError(f"ddpm_check.n_samples: expected >= 2, got {n}")
    data_dir = ctx.input_dir("data")
    real = {"test_normal": read_split(data_dir, "test", label=0, limit=n)["image"],
            "train_normal": read_split(data_dir, "train", label=0, limit=n)["image"],
            "test_tumor": read_split(data_dir, "test", label=1, limit=n)["image"]}
    predict = make_predict_fn(loaders.load_classifier(ctx.input_dir("train_classifier")),
                              tumor_class=ctx.tumor_class, batch_size=int(cfg.batch_size))
    # the key the score stage drew these samples with before the check was a stage of its own
    key = rng.fold(rng.root_key(int(ctx.config.seed)), "score", "ddpm_samples")
    summary = sample_quality(loaders.load_eps_model(ctx.input_dir("train_ddpm")), predict, real, key, n=n,
                             steps=int(cfg.sample_steps), kid_subset_size=int(cfg.kid_subset_size) or None)
    artifacts.write_summary(ctx.dir, summary)
    return {"kid_samples": summary.get("kid", {}).get("samples", {}).get("kid"), "seconds": round(time.time() - t0, 2)}
