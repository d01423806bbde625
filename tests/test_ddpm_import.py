"""A DDPM trained with diffusers in the pipeline: train_ddpm.init_weights (as is, or fine-tuned)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ibo_jax import io as ibo_io
from ibo_jax import pipeline
from ibo_jax.train import ddpm

S = 16


def _diffusers_pipeline_dir(root: Path, **scheduler_kw) -> tuple:
    """A small random diffusers UNet2DModel + DDPMScheduler saved as a pipeline folder."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from ibo_jax_testing.models import diffusers_pipeline_dir

    return diffusers_pipeline_dir(root, size=S, **scheduler_kw)


def _config(tmp_path: Path, init_weights: Path, num_steps: int, train: bool = True):
    from ibo_jax_testing import demo_config

    rng = np.random.default_rng(0)
    n = 16
    ibo_io.write_npz(tmp_path / "patches.npz", {
        "image": rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8), "label": np.arange(n) % 2,
        "tumor_mask": np.zeros((n, S, S), bool),
        "split": np.array(["train" if train else "val"] * 8 + ["val"] * 4 + ["test"] * 4)})
    config = demo_config()
    config.image_size = S
    config.data.source, config.data.npz_path, config.data.n_examples = "npz", str(tmp_path / "patches.npz"), 0
    c = config.train_ddpm
    c.image_size, c.init_weights, c.num_steps, c.batch_size = 0, str(init_weights), num_steps, 2
    c.n_samples, c.sample_steps, c.log_every = 4, 5, 1
    return config


@pytest.mark.slow
def test_diffusers_ddpm_used_as_is_and_fine_tuned(tmp_path):
    torch, unet, sched = _diffusers_pipeline_dir(tmp_path / "ckpt")
    # used as is: no training patches needed (an evaluation-only dataset)
    pipeline.run(_config(tmp_path, tmp_path / "ckpt", 0, train=False), tmp_path / "w", stages=["data", "train_ddpm"])
    eps_model = ddpm.load_eps_model(tmp_path / "w" / "train_ddpm")
    # the diffusers scheduler's betas (cosine, T = 50), not the stage's defaults (linear, T = 1000)
    np.testing.assert_allclose(eps_model.betas, sched.betas.numpy(), rtol=1e-5)
    x = np.random.default_rng(1).uniform(-1, 1, (2, S, S, 3)).astype(np.float32)
    t = np.array([3, 40], np.int32)
    got = np.asarray(eps_model.apply(eps_model.params, jnp.asarray(x), jnp.asarray(t)))
    with torch.no_grad():
        want = unet(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(t.astype(np.int64))).sample
    want = want.numpy().transpose(0, 2, 3, 1)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4  # the same network, not retrained
    meta = ibo_io.read_json(tmp_path / "w" / "train_ddpm" / "model.json")
    assert meta["schedule"]["kind"] == "cosine" and meta["schedule"]["T"] == 50 and meta["image_size"] == S

    # num_steps > 0: fine-tuned from the checkpoint (same architecture, weights moved)
    pipeline.run(_config(tmp_path, tmp_path / "ckpt" / "unet", 2), tmp_path / "f", stages=["data", "train_ddpm"])
    tuned = ddpm.load_eps_model(tmp_path / "f" / "train_ddpm")
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), tuned.params, eps_model.params)
    assert max(jax.tree.leaves(moved)) > 0
    np.testing.assert_allclose(tuned.betas, eps_model.betas)  # ../scheduler found beside unet/


def test_diffusers_ddpm_errors_name_the_file(tmp_path):
    _diffusers_pipeline_dir(tmp_path / "v", prediction_type="velocity")
    with pytest.raises(ValueError, match=r"scheduler_config.json: prediction_type='velocity'; expected one of"):
        ddpm.load_diffusers_ddpm(tmp_path / "v")
    diffusers = pytest.importorskip("diffusers")
    diffusers.UNet2DModel(sample_size=S, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                          down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                          out_channels=6).save_pretrained(tmp_path / "six")
    with pytest.raises(ValueError, match=r"config.json: in_channels=3, out_channels=6; expected 3 and 3"):
        ddpm.load_diffusers_ddpm(tmp_path / "six")
    with pytest.raises(FileNotFoundError, match="init_weights: .*nope does not exist"):
        ddpm.load_diffusers_ddpm(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        ddpm.load_diffusers_ddpm(tmp_path)  # a folder without a UNet


def test_zero_steps_needs_a_model(tmp_path):
    """num_steps = 0 without init_weights would 'use as is' a random UNet: refused by name."""
    config = _config(tmp_path, "", 0)
    with pytest.raises(ValueError, match=r"train_ddpm.num_steps=0: 0 means 'use train_ddpm.init_weights"):
        pipeline.run(config, tmp_path / "w", stages=["data", "train_ddpm"])
