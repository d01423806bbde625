"""DDPM training on normal patches: a pure jitted step, EMA, orbax checkpoints, a short sampler.

    graphdef, state = init_state(model, tx)               # state: dict params/ema/opt_state/step
    step_fn = make_train_step(graphdef, tx, sched, ema_decay=0.9999)
    state, metrics = step_fn(state, images, key)          # images float32 [B, H, W, 3] in [0, 1]
    x = sample(eps_model, key, n=16, num_steps=50)        # respaced ancestral DDPM, one lax.scan

Data-parallel: pass `images` sharded over the mesh axis `data` (`ibo_jax.parallel.shard_batch`) and
a replicated `state`; XLA inserts the gradient all-reduce. The finished model is written to the
stage directory (`model.json` + `ema_params/` via orbax, `ibo_jax.models.loaders.save_eps_model`) and
read back with `ibo_jax.models.loaders.load_eps_model`; a diffusers DDPM comes in through
`loaders.load_diffusers_ddpm`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from flax import nnx

from ibo_jax.models.loaders import (  # noqa: F401  (re-exported: the stage and old callers use them here)
    EpsModel,
    load_diffusers_ddpm,
    load_eps_model,
    make_apply,
    save_eps_model,
)
from ibo_jax.models.unet import UNet2DModel
from ibo_jax.repaint import diffusion
from ibo_jax.repaint.unconditional import sample  # noqa: F401  (re-exported)


def make_optimizer(lr: float = 1e-4, warmup_steps: int = 500, weight_decay: float = 1e-6,
                   grad_clip: float = 1.0, *, schedule: str = "constant",
                   total_steps: int = 0) -> optax.GradientTransformation:
    """AdamW with a linear warm-up to `lr`, then constant (or cosine decay to 0 at `total_steps`),
    after global-norm gradient clipping."""
    w = max(warmup_steps, 1)
    if schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, max(total_steps - w, 1))
    elif schedule == "constant":
        after = optax.constant_schedule(lr)
    else:
        raise ValueError(f"lr schedule: {schedule!r}; expected 'constant' or 'cosine'")
    sched = optax.join_schedules([optax.linear_schedule(lr / w, lr, w), after], [w])
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adamw(sched, weight_decay=weight_decay))


def init_state(model: UNet2DModel, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, dict]:
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    state = {"params": params, "ema": jax.tree.map(jnp.copy, params), "opt_state": tx.init(params),
             "step": jnp.zeros((), jnp.int32)}
    return graphdef, state


def dihedral_augment(x: jax.Array, key: jax.Array) -> jax.Array:
    """Random flip / rot90 (one of the 8 symmetries of the square) per example: [B, S, S, C]."""
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"dihedral_augment: needs square images, got {x.shape}")
    k = jax.random.randint(key, (x.shape[0],), 0, 8)
    variants = []
    for i in range(8):
        v = jnp.rot90(x, i % 4, axes=(1, 2))
        variants.append(jnp.flip(v, axis=2) if i >= 4 else v)
    stacked = jnp.stack(variants)  # [8, B, S, S, C]
    return jnp.take_along_axis(stacked, k[None, :, None, None, None], axis=0)[0]


def random_crops(x: jax.Array, key: jax.Array, size: int) -> jax.Array:
    """One random size x size crop per example of [B, S, S, C] (the UNet is fully convolutional:
    trained on crops at the patches' own pixel scale, it inpaints whole patches)."""
    b, s = x.shape[0], x.shape[1]
    if size >= s:
        return x
    off = jax.random.randint(key, (b, 2), 0, s - size + 1)
    return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (size, size, im.shape[-1])))(x, off)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, sched: diffusion.DiffusionSchedule,
                    *, ema_decay: float = 0.9999, augment: bool = True, dropout: bool = False,
                    prediction_type: str = "epsilon", loss_weighting: str = "none", snr_gamma: float = 5.0,
                    crop_size: int = 0) -> Callable:
    """jit-compiled `(state, images [B,H,W,3] in [0,1], key) -> (state, {'loss', 'grad_norm'})`.

    prediction_type: what the network outputs ('epsilon', 'v_prediction', 'sample' = x0);
    loss_weighting 'min_snr' weighs the MSE by min-SNR-gamma (faster convergence); crop_size > 0
    trains on random crops of that size (native pixel scale at a fraction of the cost).
    """
    T = sched.betas.shape[0]
    if prediction_type not in diffusion.PREDICTION_TYPES:
        raise ValueError(f"prediction_type: {prediction_type!r}; expected one of {diffusion.PREDICTION_TYPES}")
    if loss_weighting not in ("none", "min_snr"):
        raise ValueError(f"loss_weighting: {loss_weighting!r}; expected 'none' or 'min_snr'")

    def loss_fn(params, x_t, t, target, weight, key):
        model = nnx.merge(graphdef, params)
        out = model(x_t, t, rngs=nnx.Rngs(dropout=key) if dropout else None)
        per_example = jnp.mean(jnp.square(out.astype(jnp.float32) - target), axis=(1, 2, 3))
        return jnp.mean(weight * per_example)

    def step(state, images, key):
        k_aug, k_t, k_noise, k_drop, k_crop = jax.random.split(key, 5)
        x0 = images.astype(jnp.float32) * 2.0 - 1.0  # [B, H, W, 3] in [-1, 1]
        if crop_size:
            x0 = random_crops(x0, k_crop, crop_size)
        if augment:
            x0 = dihedral_augment(x0, k_aug)
        t = jax.random.randint(k_t, (x0.shape[0],), 0, T)
        noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
        x_t = diffusion.q_sample(sched, x0, t, noise)
        target = diffusion.target_of(prediction_type, sched, x0, t, noise)
        weight = (diffusion.min_snr_weight(prediction_type, sched, t, snr_gamma) if loss_weighting == "min_snr"
                  else jnp.ones((x0.shape[0],), jnp.float32))
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], x_t, t, target, weight, k_drop)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        step_no = state["step"] + 1
        # EMA warm-up as in diffusers' EMAModel: short runs are not dominated by the random init
        decay = jnp.minimum(ema_decay, (1.0 + step_no) / (10.0 + step_no))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"], params)
        new = {"params": params, "ema": ema, "opt_state": opt_state, "step": step_no}
        return new, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return jax.jit(step, donate_argnums=(0,))


# ---------------------------------------------------------------- checkpoints and export


def checkpoint_manager(directory: str | Path, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(Path(directory).absolute(),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save_checkpoint(mngr: ocp.CheckpointManager, state: dict) -> None:
    mngr.save(int(state["step"]), args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()


def restore_checkpoint(mngr: ocp.CheckpointManager, state: dict) -> dict | None:
    """Latest checkpoint restored onto `state`'s structure and shardings, or None if there is none."""
    step = mngr.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
