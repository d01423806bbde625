"""Plain ancestral DDPM sampling (no known pixels): what a trained epsilon model generates.

    x = unconditional.sample(eps_model, key, n=16, num_steps=50)   # [n, S, S, 3] in [0, 1]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ibo_jax.repaint import diffusion


@functools.partial(jax.jit, static_argnames=("apply", "shape", "num_steps", "T"))
def _sample(apply, params, key, sched, tmap, *, shape, num_steps, T):
    x = jax.random.normal(jax.random.fold_in(key, -1 & 0x7FFFFFFF), shape, jnp.float32)

    def body(x, i):
        t = jnp.full((shape[0],), i, jnp.int32)
        eps = apply(params, x, jnp.take(tmap, t))
        noise = jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32)
        return diffusion.p_sample_step(sched, eps, x, t, noise, clip=True, var="fixed_small"), None

    x, _ = jax.lax.scan(body, x, jnp.arange(num_steps - 1, -1, -1))
    return x


def sample(eps_model, key: jax.Array, n: int, *, num_steps: int = 50,
           image_size: int | None = None) -> jax.Array:
    """Plain ancestral DDPM over `num_steps` respaced steps -> images [n, S, S, 3] in [0, 1].
    eps_model: an `ibo_jax.models.loaders.EpsModel` (apply, params, betas, image_size)."""
    T = int(eps_model.betas.shape[0])
    keep = diffusion.space_timesteps(T, min(num_steps, T))
    betas_resp, tmap = diffusion.respace(eps_model.betas, keep)
    s = image_size or eps_model.image_size
    x = _sample(eps_model.apply, eps_model.params, key, diffusion.make_schedule(betas_resp),
                jnp.asarray(tmap), shape=(n, s, s, 3), num_steps=len(keep), T=T)
    return (x + 1.0) / 2.0
