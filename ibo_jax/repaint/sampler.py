"""RePaint as one compiled program: a loop over precomputed per-call step tables.

The official time list (`schedule.jump_schedule`) is folded, on the host and once per schedule,
into one row per network call: (merged undo coefficients, respaced t, trained t, inject flag).
A run of consecutive undo steps from level a up to level b is one exact draw from the composed
forward kernel, x_b = sqrt(abar_b / abar_a) x_a + sqrt(1 - abar_b / abar_a) eps, so the loop has
exactly `unet_calls` iterations and memory does not depend on the schedule length.

The schedule is data, not program: the step tables are padded to a fixed bucket (4,096 rows, or
the next power of two beyond), the respaced tables to the trained length T, and the number of calls
is a runtime argument of a `fori_loop`. One compiled program per (shape, T, network, options)
therefore serves every (t_T, jump_length, jump_n_sample), so a sweep over RePaint settings
compiles the sampler once.

Per network call, as in the official RePaint `p_sample` (`inpa_inj_sched_prev`):
  x <- undo(x)                                   (if the previous transitions went up)
  x <- m * q_sample(x0, t) + (1 - m) * x         (every call but the first)
  x <- reverse step from t with eps_fn(x, t_trained)
and at the end the known pixels are pasted back exactly. Every draw of example b at call i comes
from fold_in(key_b, i), so results do not depend on batch size, padding or device count. The
normals come from `ibo_jax.rng.normal` (unrolled counter-mode Threefry; JAX's own threefry is a
rolled loop on the CPU, 12% of a tiny UNet's step there).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ibo_jax import rng
from ibo_jax.checks import check_finite
from ibo_jax.parallel import data_sharding, make_mesh, pad_batch
from ibo_jax.repaint import diffusion as D
from ibo_jax.repaint.schedule import jump_schedule

EpsFn = Callable[..., jax.Array]


MIN_BUCKET = 4096  # step-table rows: (250, 10, 10) is 2,410 calls


def _bucket(n: int) -> int:
    """Padded length of the step tables (every schedule up to it shares one compiled program)."""
    return max(MIN_BUCKET, 1 << max(n - 1, 0).bit_length())


@functools.lru_cache(maxsize=64)
def _step_tables(betas_key: bytes, T: int, t_T: int, jump_args: tuple) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Respaced betas and one row per network call (host numpy, cached per schedule)."""
    betas = np.frombuffer(betas_key, dtype=np.float64)
    if t_T == T:
        new_betas, tmap = betas.copy(), np.arange(T, dtype=np.int32)
    else:
        new_betas, tmap = D.respace(betas, D.space_timesteps(T, t_T))
    abar = np.cumprod(1.0 - new_betas)
    level_abar = lambda lv: 1.0 if lv < 0 else abar[lv]  # noqa: E731  level -1 = clean image
    times = jump_schedule(t_T, *jump_args)
    rows: dict[str, list] = {k: [] for k in ("t", "t_model", "undo_a", "undo_b", "inject")}
    undo_from = None
    for a, b in zip(times[:-1], times[1:]):
        if b > a:  # step up: remember where the run of undo steps started
            undo_from = a if undo_from is None else undo_from
            continue
        ratio = 1.0 if undo_from is None else level_abar(a) / level_abar(undo_from)
        rows["t"].append(a)
        rows["t_model"].append(int(tmap[a]))
        rows["undo_a"].append(np.sqrt(ratio))
        rows["undo_b"].append(np.sqrt(1.0 - ratio))
        rows["inject"].append(0.0 if not rows["inject"] else 1.0)
        undo_from = None
    tables = {
        "t": np.asarray(rows["t"], np.int32),
        "t_model": np.asarray(rows["t_model"], np.int32),
        "undo_a": np.asarray(rows["undo_a"], np.float32),
        "undo_b": np.asarray(rows["undo_b"], np.float32),
        "inject": np.asarray(rows["inject"], np.float32),
    }
    return tables, new_betas


#: the samplers behind `inpaint(sampler=...)`: (description, default eta)
SAMPLERS = {
    "repaint": ("official RePaint: known part re-noised from the image, ancestral DDPM step for the rest "
                "(eta given: diffusers' DDIM-style step, eps kept after clipping x0)", None),
    "ddim_repaint": ("RePaint's combination and jumps with DDIM steps (eps re-derived from the clipped x0; "
                     "eta = 1 is the DDPM posterior step)", 0.0),
    "ddnm": ("null-space / x0 replacement (DDNM-style): the known pixels of each x0 estimate replaced by the "
             "image's, then a DDIM step with the network's eps; jumps = time travel", 0.85),
}


def network_calls(sampler: str, t_T: int, jump_length: int = 1, jump_n_sample: int = 1) -> int:
    """Network calls per inpainting (every sampler walks the same jump schedule)."""
    from ibo_jax.repaint.schedule import schedule_cost

    check_sampler(sampler)
    return schedule_cost(t_T, jump_length, jump_n_sample).unet_calls


def check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r} unknown; expected one of {tuple(SAMPLERS)}")


def _ddim(sched, x0, eps, t, noise, eta):
    """DDIM step from level t to the next lower one: sigma = eta * sqrt(posterior variance)."""
    abar_prev = sched.alphas_cumprod_prev[t]
    sigma = eta * jnp.sqrt(sched.posterior_variance[t])
    direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(abar_prev) * x0 + direction + jnp.where(t > 0, sigma, 0.0) * noise


def _reverse(sched, eps, x, t, noise, x0_known, keep, *, sampler: str, clip: bool, var: str, eta: float | None):
    if sampler == "repaint" and eta is None:  # official: ancestral DDPM step
        return D.p_sample_step(sched, eps, x, t, noise, clip=clip, var=var)
    x0 = D.predict_x0(sched, x, t, eps)
    x0 = jnp.clip(x0, -1.0, 1.0) if clip else x0
    if sampler == "repaint":  # diffusers-style: eps kept after clipping x0
        return _ddim(sched, x0, eps, t, noise, eta)
    if sampler == "ddim_repaint":  # eps consistent with the clipped x0
        eps = (x - jnp.sqrt(sched.alphas_cumprod[t]) * x0) / jnp.sqrt(1.0 - sched.alphas_cumprod[t])
        return _ddim(sched, x0, eps, t, noise, eta)
    x0 = keep * x0_known + (1.0 - keep) * x0  # ddnm: the known pixels of the x0 estimate are the image's
    return _ddim(sched, x0, eps, t, noise, eta)


@functools.partial(
    jax.jit, static_argnames=("eps_fn", "has_params", "sampler", "clip", "var", "eta", "compute_dtype")
)
def _inpaint_core(params, sched, tables, n_calls, x0, keep, keys, *, eps_fn, has_params, sampler, clip, var, eta,
                  compute_dtype):
    # x0 [N, H, W, C] float32 in [-1, 1]; keep [N, H, W, 1]; keys [N] typed keys; the first
    # n_calls (int32 scalar) rows of the padded tables are this schedule's
    n = x0.shape[0]
    if compute_dtype is not None:
        params = jax.tree.map(lambda p: p.astype(compute_dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)

    def call(x, t_model):
        xin = x if compute_dtype is None else x.astype(compute_dtype)
        tt = jnp.full((n,), t_model, jnp.int32)
        eps = eps_fn(params, xin, tt) if has_params else eps_fn(xin, tt)
        return eps.astype(jnp.float32)

    def draw(i):  # three independent normals per example per call: undo, known part, reverse step
        ks = jax.vmap(lambda k: rng.fold_in(k, i))(keys)
        z = jax.vmap(lambda k: rng.normal(k, (3,) + x0.shape[1:]))(ks)
        return z[:, 0], z[:, 1], z[:, 2]

    def body(i, x):
        row = {k: v[i] for k, v in tables.items()}
        z_undo, z_known, z_step = draw(i)
        x = row["undo_a"] * x + row["undo_b"] * z_undo
        if sampler != "ddnm":  # RePaint: the known part re-noised from the image at this level
            known = D.q_sample(sched, x0, row["t"], z_known)
            m = keep * row["inject"]
            x = m * known + (1.0 - m) * x
        eps = call(x, row["t_model"])
        return _reverse(sched, eps, x, row["t"], z_step, x0, keep, sampler=sampler, clip=clip, var=var, eta=eta)

    x_T = jax.vmap(lambda k: rng.normal(rng.fold_in(k, 0x7FFFFFFF), x0.shape[1:]))(keys)
    x = jax.lax.fori_loop(0, n_calls, body, x_T)
    return keep * x0 + (1.0 - keep) * x


@functools.partial(jax.jit, static_argnames=("n_draws",))
def _draw_keys(keys: jax.Array, *, n_draws: int) -> jax.Array:
    """[B] keys -> [B * n_draws], the draws of one example adjacent: fold_in(key_b, d)."""
    return jax.vmap(lambda k: jax.vmap(lambda d: jax.random.fold_in(k, d))(jnp.arange(n_draws)))(keys).reshape(-1)


def _as_keys(key: Any, batch: int, n_draws: int = 1) -> jax.Array:
    """Typed keys [batch * n_draws]: a single key is folded with the example's position (0..batch-1)."""
    return _draw_keys(rng.example_keys(key, batch, name="inpaint: key"), n_draws=n_draws)


@functools.lru_cache(maxsize=64)
def _device_tables(betas_key: bytes, T: int, t_T: int, jump_args: tuple):
    """The step tables padded to their bucket, the number of calls, and the respaced schedule
    padded to T (entries past t_T are never read), as device arrays (built once per schedule)."""
    tables, new_betas = _step_tables(betas_key, T, t_T, jump_args)
    n = len(tables["t"])
    padded = {k: jnp.asarray(np.pad(v, (0, _bucket(n) - n))) for k, v in tables.items()}
    # pad with the smallest kept beta: the padded alpha-bars stay positive (no overflowing 1 / abar)
    sched = D.make_schedule(np.pad(new_betas, (0, T - new_betas.size), constant_values=new_betas.min()))
    return padded, jnp.int32(n), sched


def inpaint(
    eps_fn: EpsFn,
    x0: jax.Array,
    keep_mask: jax.Array,
    key: jax.Array,
    *,
    betas: np.ndarray,
    t_T: int = 250,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    params: Any = None,
    eta: float | None = None,
    n_draws: int = 1,
    jump2_length: int = 1,
    jump2_n_sample: int = 1,
    jump3_length: int = 1,
    jump3_n_sample: int = 1,
    n_sample: int = 1,
    start_resampling: int = 100_000_000,
    clip: bool = True,
    var: str = "fixed_small",
    compute_dtype: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    sampler: str = "repaint",
    setting: Any = None,
) -> jax.Array:
    """Inpainting in the diffusion's space: RePaint or a cheaper sampler on the same eps model.

    x0 [B, H, W, C] in [-1, 1]; keep_mask [B, H, W, 1] (or [B, H, W]), 1 = known pixel; key a
    single key or one per example [B]; betas: the trained betas [T]; t_T respaced steps (t_T = T:
    no respacing). eps_fn(x_t, t) or, with `params`, eps_fn(params, x_t, t), with t int32 [B] in
    trained-timestep units. sampler (`SAMPLERS`): 'repaint' (eta=None: the official ancestral
    step; a float: diffusers' DDIM-style step), 'ddim_repaint' (DDIM steps, eta default 0; 1 is
    the DDPM posterior) or 'ddnm' (x0 replacement, eta default 0.85; jump_length/jump_n_sample
    are its time travel). Every sampler walks `jump_schedule(t_T, jump_length, jump_n_sample)`:
    `network_calls(sampler, t_T, j, r)` calls per inpainting. compute_dtype casts the parameters and the network input (e.g. jnp.bfloat16); for a
    Flax module whose own `dtype` is None that is not enough (an fp32 time embedding promotes the
    activations back to fp32): build the module with dtype=jnp.bfloat16 instead
    (`load_eps_model(dir, dtype=jnp.bfloat16)`, `unet2d(dtype=...)`). The batch is split over `mesh`
    (default: this process's devices). Returns [B, H, W, C] float32, or [B, n_draws, H, W, C] when
    n_draws > 1 (draw d of example b uses fold_in(key_b, d)).

    eps_fn is a static argument of the compiled program: pass the same function object on every
    call (not a fresh lambda) so the program is traced once per shape: the schedule (t_T and the
    jump settings) is data, and every schedule of up to 4,096 network calls shares the program.

    setting: a `repaint.Setting` (or what `Setting.parse` reads) in place of the setting keywords
    (sampler, t_T, the jump sizes and counts, n_sample, start_resampling, eta, clip, var); a
    keyword that differs from both its default and the setting is an error.
    """
    if setting is not None:
        from ibo_jax.repaint.setting import resolve

        given = dict(sampler=sampler, t_T=t_T, jump_length=jump_length, jump_n_sample=jump_n_sample, eta=eta,
                     jump2_length=jump2_length, jump2_n_sample=jump2_n_sample, jump3_length=jump3_length,
                     jump3_n_sample=jump3_n_sample, n_sample=n_sample, start_resampling=start_resampling,
                     clip=clip, var=var)
        s = resolve(setting, given, inpaint, "inpaint")
        (sampler, t_T, jump_length, jump_n_sample, eta, jump2_length, jump2_n_sample, jump3_length,
         jump3_n_sample, n_sample, start_resampling, clip, var) = (getattr(s, k) for k in given)
    check_finite(x0, "inpaint: x0")
    check_finite(keep_mask, "inpaint: keep_mask")
    x0 = jnp.asarray(x0, jnp.float32)
    if x0.ndim != 4:
        raise ValueError(f"inpaint: x0 must be [B, H, W, C], got shape {x0.shape}")
    keep = jnp.asarray(keep_mask, jnp.float32)
    keep = keep[..., None] if keep.ndim == 3 else keep
    if keep.shape != x0.shape[:3] + (1,):
        raise ValueError(f"inpaint: keep_mask must be [B, H, W, 1] matching x0 {x0.shape}, got {tuple(keep_mask.shape)}")
    check_sampler(sampler)
    if eta is None:
        eta = SAMPLERS[sampler][1]
    if var not in D.VARIANCES:
        raise ValueError(f"inpaint: var must be one of {D.VARIANCES}, got {var!r}")
    betas = np.asarray(betas, np.float64)
    if t_T > betas.size:
        raise ValueError(f"inpaint: t_T={t_T} exceeds the {betas.size} trained steps")
    b = x0.shape[0]
    if n_draws < 1:
        raise ValueError(f"inpaint: n_draws must be >= 1, got {n_draws}")
    # [B * n_draws] rows, the draws of one example adjacent; draw d uses fold_in(key_b, d)
    keys = _as_keys(key, b, n_draws)
    if n_draws > 1:
        x0 = jnp.repeat(x0, n_draws, axis=0)
        keep = jnp.repeat(keep, n_draws, axis=0)
    jump_args = (jump_length, jump_n_sample, jump2_length, jump2_n_sample, jump3_length, jump3_n_sample,
                 n_sample, start_resampling)
    tables, n_calls, sched = _device_tables(betas.tobytes(), betas.size, int(t_T), jump_args)

    mesh = make_mesh(jax.local_devices()) if mesh is None else mesh
    n = x0.shape[0]
    multiple = mesh.devices.size
    if multiple > 1:
        x0, _ = pad_batch(np.asarray(x0), multiple)
        keep, _ = pad_batch(np.asarray(keep), multiple)
        keys = jax.random.wrap_key_data(jnp.asarray(pad_batch(np.asarray(jax.random.key_data(keys)), multiple)[0]))
        sharding = data_sharding(mesh)
        x0, keep, keys = (jax.device_put(a, sharding) for a in (x0, keep, keys))
    out = _inpaint_core(
        params, sched, tables, n_calls, x0, keep, keys,
        eps_fn=eps_fn, has_params=params is not None, sampler=sampler, clip=bool(clip), var=var,
        eta=None if eta is None else float(eta), compute_dtype=compute_dtype,
    )[:n]
    return out.reshape((b, n_draws) + out.shape[1:]) if n_draws > 1 else out
