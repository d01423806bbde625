"""DDPM training on normal patches: a pure jitted step, EMA, orbax checkpoints, a short sampler.

    graphdef, state = init_state(model, tx)               # state: dict params/ema/opt_state/step
    step_fn = make_train_step(graphdef, tx, sched, ema_decay=0.9999)
    state, metrics = step_fn(state, images, key)          # images float32 [B, H, W, 3] in [0, 1]
    x = sample(eps_model, key, n=16, num_steps=50)        # respaced ancestral DDPM, one lax.scan

Data-parallel: pass `images` sharded over the mesh axis `data` (`ibo_jax.parallel.shard_batch`) and
a replicated `state`; XLA inserts the gradient all-reduce. The finished model is written to the
stage directory (`model.json` + `ema_params/` via orbax) and read back with `load_eps_model`.
A DDPM trained with diffusers comes in through `load_diffusers_ddpm` (UNet + noise schedule).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from ibo_jax.io import write_json
from ibo_jax.models.unet import UNet2DModel, UNetConfig
from ibo_jax.repaint import diffusion


@dataclasses.dataclass(frozen=True)
class EpsModel:
    """A trained epsilon network as a pure function: `apply(params, x_t, t) -> eps` [B, H, W, C]."""

    apply: Callable[[Any, jax.Array, jax.Array], jax.Array]
    params: Any
    betas: np.ndarray  # float32 [T], the trained schedule
    image_size: int

    def __call__(self, x_t: jax.Array, t: jax.Array) -> jax.Array:
        return self.apply(self.params, x_t, t)


def make_optimizer(lr: float = 1e-4, warmup_steps: int = 500, weight_decay: float = 1e-6,
                   grad_clip: float = 1.0) -> optax.GradientTransformation:
    """AdamW with a linear warm-up to `lr`, then constant, after global-norm gradient clipping."""
    sched = optax.join_schedules(
        [optax.linear_schedule(lr / max(warmup_steps, 1), lr, max(warmup_steps, 1)), optax.constant_schedule(lr)],
        [max(warmup_steps, 1)],
    )
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


@functools.lru_cache(maxsize=64)
def make_apply(graphdef: nnx.GraphDef) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """`apply(params, x_t, t) -> eps`; one function per graphdef, so jit caches keyed on it hit."""

    def apply(params, x_t, t):
        return nnx.merge(graphdef, params)(x_t, t)

    return apply


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, sched: diffusion.DiffusionSchedule,
                    *, ema_decay: float = 0.9999, augment: bool = True, dropout: bool = False) -> Callable:
    """jit-compiled `(state, images [B,H,W,3] in [0,1], key) -> (state, {'loss', 'grad_norm'})`."""
    T = sched.betas.shape[0]

    def loss_fn(params, x_t, t, noise, key):
        model = nnx.merge(graphdef, params)
        eps = model(x_t, t, rngs=nnx.Rngs(dropout=key) if dropout else None)
        return diffusion.eps_loss(eps, noise)

    def step(state, images, key):
        k_aug, k_t, k_noise, k_drop = jax.random.split(key, 4)
        x0 = images.astype(jnp.float32) * 2.0 - 1.0  # [B, H, W, 3] in [-1, 1]
        if augment:
            x0 = dihedral_augment(x0, k_aug)
        t = jax.random.randint(k_t, (x0.shape[0],), 0, T)
        noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
        x_t = diffusion.q_sample(sched, x0, t, noise)
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], x_t, t, noise, k_drop)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        step_no = state["step"] + 1
        # EMA warm-up as in diffusers' EMAModel: short runs are not dominated by the random init
        decay = jnp.minimum(ema_decay, (1.0 + step_no) / (10.0 + step_no))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"], params)
        new = {"params": params, "ema": ema, "opt_state": opt_state, "step": step_no}
        return new, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return jax.jit(step, donate_argnums=(0,))


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


def sample(eps_model: EpsModel, key: jax.Array, n: int, *, num_steps: int = 50,
           image_size: int | None = None) -> jax.Array:
    """Plain ancestral DDPM over `num_steps` respaced steps -> images [n, S, S, 3] in [0, 1]."""
    T = int(eps_model.betas.shape[0])
    keep = diffusion.space_timesteps(T, min(num_steps, T))
    betas_resp, tmap = diffusion.respace(eps_model.betas, keep)
    s = image_size or eps_model.image_size
    x = _sample(eps_model.apply, eps_model.params, key, diffusion.make_schedule(betas_resp),
                jnp.asarray(tmap), shape=(n, s, s, 3), num_steps=len(keep), T=T)
    return (x + 1.0) / 2.0


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


def save_eps_model(stage_dir: str | Path, config: UNetConfig, ema_params: Any, *, betas: np.ndarray,
                   image_size: int, schedule: dict | None = None) -> None:
    """Writes `model.json` (UNet config, schedule, image size) and `ema_params/` (orbax)."""
    stage_dir = Path(stage_dir).absolute()
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(stage_dir / "ema_params", jax.tree.map(np.asarray, nnx.to_pure_dict(ema_params)), force=True)
    ckptr.wait_until_finished()
    write_json(stage_dir / "model.json", {"unet": config.to_dict(), "image_size": int(image_size),
                                          "betas": np.asarray(betas, np.float64).tolist(),
                                          "schedule": schedule or {}})


def load_eps_model(stage_dir: str | Path, *, dtype: Any = None) -> EpsModel:
    """The EMA epsilon model written by the train_ddpm stage (or `save_eps_model`)."""
    stage_dir = Path(stage_dir).absolute()
    meta_file = stage_dir / "model.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"load_eps_model: {meta_file} not found (has train_ddpm finished?)")
    meta = json.loads(meta_file.read_text())
    cfg = UNetConfig.from_dict(meta["unet"])
    abstract = nnx.eval_shape(lambda: UNet2DModel(cfg, rngs=nnx.Rngs(0), dtype=dtype))
    graphdef, params = nnx.split(abstract, nnx.Param)
    target = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), nnx.to_pure_dict(params))
    restored = ocp.StandardCheckpointer().restore(stage_dir / "ema_params", target)
    nnx.replace_by_pure_dict(params, restored)
    return EpsModel(apply=make_apply(graphdef), params=params,
                    betas=np.asarray(meta["betas"], np.float32), image_size=int(meta["image_size"]))


_DIFFUSERS_BETAS = {"linear": "linear", "squaredcos_cap_v2": "cosine"}


def load_diffusers_ddpm(path: str | Path, *, dtype: Any = None) -> tuple[UNet2DModel, dict | None]:
    """A diffusers-trained DDPM: (the UNet as an NNX module, its noise schedule or None).

    `path` is a UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors/.bin) or a
    pipeline folder holding `unet/` (and usually `scheduler/`). The schedule comes from
    `scheduler_config.json` in the pipeline's `scheduler/`, beside the UNet's files, or in
    `../scheduler/`: {'kind', 'T', 'beta_start', 'beta_end'} as `diffusion.beta_schedule` takes
    them (diffusers' 'linear' and 'squaredcos_cap_v2' = 'cosine'); None when there is no such file.
    Errors name the file and field: an epsilon network is needed (prediction_type 'epsilon').
    """
    from ibo_jax.models.unet_convert import from_diffusers_unet

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"init_weights: {path} does not exist (expected a diffusers UNet2DModel "
                                f"or pipeline folder)")
    unet_dir = path / "unet" if (path / "unet" / "config.json").is_file() else path
    candidates = [path / "scheduler" / "scheduler_config.json", unet_dir / "scheduler_config.json",
                  unet_dir.parent / "scheduler" / "scheduler_config.json"]
    sched_file = next((f for f in candidates if f.is_file()), None)
    schedule = None
    if sched_file is not None:
        from ibo_jax.models.unet_convert import read_config_json

        sc = read_config_json(sched_file)
        if sc.get("prediction_type", "epsilon") != "epsilon":
            raise ValueError(f"{sched_file}: prediction_type={sc['prediction_type']!r}; RePaint here needs an "
                             f"epsilon-predicting DDPM ('epsilon')")
        if sc.get("trained_betas") is not None:
            raise ValueError(f"{sched_file}: trained_betas (an explicit beta list) is not supported; expected "
                             f"beta_schedule in {sorted(_DIFFUSERS_BETAS)}")
        kind = sc.get("beta_schedule", "linear")
        if kind not in _DIFFUSERS_BETAS:
            raise ValueError(f"{sched_file}: beta_schedule={kind!r} is not supported; expected one of "
                             f"{sorted(_DIFFUSERS_BETAS)}")
        schedule = {"kind": _DIFFUSERS_BETAS[kind], "T": int(sc.get("num_train_timesteps", 1000)),
                    "beta_start": float(sc.get("beta_start", 1e-4)), "beta_end": float(sc.get("beta_end", 0.02)),
                    "source": str(sched_file)}
    model = from_diffusers_unet(unet_dir, dtype=dtype)
    if model.config.in_channels != 3 or model.config.out_channels != 3:
        raise ValueError(f"{unet_dir / 'config.json'}: in_channels={model.config.in_channels}, "
                         f"out_channels={model.config.out_channels}; expected 3 and 3 (an RGB epsilon network; "
                         f"learned-variance models with 6 outputs are not supported)")
    return model, schedule
