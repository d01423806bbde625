"""Small stand-in models for tests: a colour classifier, a toy eps model, a random diffusers DDPM."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def colour_classifier():
    """p(tumor) = sigmoid(35 (mean red - mean blue) - 2.2): about 0.9 with a red tumor square (a
    quarter of the patch, red - blue = 0.5 there), about 0.1 without it; features = the image.
    An NNX module with the classifier contract (`features`, `head`, `__call__`)."""
    import jax.numpy as jnp
    from flax import nnx

    class ColourClassifier(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.array([[-17.5, 17.5], [0.0, 0.0], [17.5, -17.5]]))
            self.b = nnx.Param(jnp.array([1.1, -1.1]))

        def features(self, x, *, normalized=False):
            return x

        def head(self, a):
            return a.mean(axis=(1, 2)) @ self.w[...] + self.b[...]

        def __call__(self, x):
            return self.head(self.features(x))

    return ColourClassifier()


def toy_eps_model(image_size: int = 16, T: int = 1000, a: float = 0.5):
    """`loaders.EpsModel` with eps = a * x_t on a linear schedule (1e-4 .. 0.02, T steps): the
    sampler pulls regenerated pixels towards grey (0 in [-1, 1]); compiles in a moment."""
    import jax.numpy as jnp

    from ibo_jax.models.loaders import EpsModel

    return EpsModel(apply=lambda params, x, t: params["a"] * x, params={"a": jnp.float32(a)},
                    betas=np.linspace(1e-4, 0.02, T).astype(np.float32), image_size=image_size)


def diffusers_pipeline_dir(root: str | Path, size: int = 16, **scheduler_kw) -> tuple:
    """A small random diffusers UNet2DModel + DDPMScheduler (cosine, T = 50) saved as a pipeline
    folder (`root/unet`, `root/scheduler`); returns (torch, unet, scheduler). Needs the interop extra."""
    import diffusers
    import torch

    root = Path(root)
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=size, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8).eval()
    sched = diffusers.DDPMScheduler(**{"num_train_timesteps": 50, "beta_schedule": "squaredcos_cap_v2", **scheduler_kw})
    unet.save_pretrained(root / "unet")
    sched.save_pretrained(root / "scheduler")
    return torch, unet, sched
