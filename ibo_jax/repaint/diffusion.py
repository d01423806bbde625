"""DDPM maths: beta schedules, alpha-bar tables, forward noising, posterior, one reverse step.

Timesteps are 0-based (t in [0, T-1]) as in the official DDPM/RePaint code and diffusers. Images
live in the diffusion's own space [-1, 1]. All functions are pure and jit-friendly; the tables are a
frozen pytree (`DiffusionSchedule`) so they can be passed into compiled programs as arguments.

Respacing (`respace`, `space_timesteps`) keeps a subset of the trained steps and recomputes the
betas from the kept alpha-bars, exactly as improved-diffusion's `SpacedDiffusion` (which the
official RePaint uses): new_beta_i = 1 - abar[k_i] / abar[k_{i-1}].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

VARIANCES = ("fixed_small", "fixed_large")


def beta_schedule(kind: str, T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Betas float64 [T]. `linear`: DDPM's linspace(beta_start, beta_end, T), arguments taken
    literally (no 1000/T rescaling); `cosine`: Nichol & Dhariwal's squared-cosine alpha-bar with s=0.008, betas clipped at 0.999."""
    if T < 1:
        raise ValueError(f"beta_schedule: T must be >= 1, got {T}")
    if kind == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if kind == "cosine":
        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1.0 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)]
        return np.asarray(betas, dtype=np.float64)
    raise ValueError(f"beta_schedule: kind must be 'linear' or 'cosine', got {kind!r}")


@flax.struct.dataclass
class DiffusionSchedule:
    """Per-timestep tables, float32 [T] each (0-based t)."""

    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    sqrt_recip_alphas_cumprod: jax.Array
    sqrt_recipm1_alphas_cumprod: jax.Array
    posterior_variance: jax.Array  # fixed small: beta_t (1 - abar_{t-1}) / (1 - abar_t)
    posterior_log_variance_clipped: jax.Array  # log, with t=0 replaced by t=1 (variance 0 at t=0)
    fixed_large_variance: jax.Array  # beta_t, with t=0 replaced by posterior_variance[1]
    fixed_large_log_variance: jax.Array
    posterior_mean_coef1: jax.Array  # multiplies x0
    posterior_mean_coef2: jax.Array  # multiplies x_t

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])


def make_schedule(betas: Sequence[float] | np.ndarray) -> DiffusionSchedule:
    """Builds every table in float64 numpy, stores float32 (as the official code does)."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0:
        raise ValueError(f"make_schedule: betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not np.all((betas > 0) & (betas <= 1)):
        raise ValueError("make_schedule: betas must lie in (0, 1]")
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    first = post_var[1] if betas.size > 1 else betas[0]
    log_clipped = np.log(np.append(first, post_var[1:]))
    large = np.append(first, betas[1:])
    f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)  # noqa: E731
    return DiffusionSchedule(
        betas=f32(betas),
        alphas_cumprod=f32(abar),
        alphas_cumprod_prev=f32(abar_prev),
        sqrt_alphas_cumprod=f32(np.sqrt(abar)),
        sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - abar)),
        sqrt_recip_alphas_cumprod=f32(np.sqrt(1.0 / abar)),
        sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1.0 / abar - 1.0)),
        posterior_variance=f32(post_var),
        posterior_log_variance_clipped=f32(log_clipped),
        fixed_large_variance=f32(large),
        fixed_large_log_variance=f32(np.log(large)),
        posterior_mean_coef1=f32(betas * np.sqrt(abar_prev) / (1.0 - abar)),
        posterior_mean_coef2=f32((1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)),
    )


def extract(table: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """table[t] broadcast against x: t int [B] (or scalar) -> [B, 1, 1, ...] in x's dtype."""
    t = jnp.asarray(t, jnp.int32)
    v = jnp.take(table, t)
    if v.ndim == 0:
        return v.astype(x.dtype)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)).astype(x.dtype)


def q_sample(sched: DiffusionSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    return extract(sched.sqrt_alphas_cumprod, t, x0) * x0 + extract(
        sched.sqrt_one_minus_alphas_cumprod, t, x0
    ) * noise


def eps_loss(pred: jax.Array, noise: jax.Array) -> jax.Array:
    """Mean squared error of the epsilon prediction (scalar, float32)."""
    d = pred.astype(jnp.float32) - noise.astype(jnp.float32)
    return jnp.mean(jnp.square(d))


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def target_of(prediction_type: str, sched: DiffusionSchedule, x0: jax.Array, t: jax.Array,
              noise: jax.Array) -> jax.Array:
    """What a network predicting `prediction_type` is trained to output: eps, v (Salimans & Ho
    2022: sqrt(abar) eps - sqrt(1 - abar) x0) or x0 ('sample', diffusers' name)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return extract(sched.sqrt_alphas_cumprod, t, x0) * noise - extract(sched.sqrt_one_minus_alphas_cumprod, t, x0) * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"prediction_type: {prediction_type!r}; expected one of {PREDICTION_TYPES}")


def eps_from_output(prediction_type: str, sched: DiffusionSchedule, x_t: jax.Array, t: jax.Array,
                    out: jax.Array) -> jax.Array:
    """The epsilon a network output implies (samplers and RePaint work with eps)."""
    if prediction_type == "epsilon":
        return out
    a, s = extract(sched.sqrt_alphas_cumprod, t, x_t), extract(sched.sqrt_one_minus_alphas_cumprod, t, x_t)
    if prediction_type == "v_prediction":  # x_t = a x0 + s eps, v = a eps - s x0  =>  eps = a v + s x_t
        return a * out + s * x_t
    if prediction_type == "sample":
        return (x_t - a * out) / jnp.maximum(s, 1e-6)
    raise ValueError(f"prediction_type: {prediction_type!r}; expected one of {PREDICTION_TYPES}")


def min_snr_weight(prediction_type: str, sched: DiffusionSchedule, t: jax.Array, gamma: float) -> jax.Array:
    """Min-SNR-gamma loss weights [B] (Hang et al. 2023) for the MSE on `prediction_type`'s target:
    min(SNR, gamma) / SNR for eps, / (SNR + 1) for v, and min(SNR, gamma) for x0."""
    abar = jnp.take(sched.alphas_cumprod, t)
    snr = abar / jnp.maximum(1.0 - abar, 1e-12)
    clipped = jnp.minimum(snr, gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped


def predict_x0(sched: DiffusionSchedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """x0 = x_t / sqrt(abar_t) - sqrt(1/abar_t - 1) eps."""
    return extract(sched.sqrt_recip_alphas_cumprod, t, x_t) * x_t - extract(
        sched.sqrt_recipm1_alphas_cumprod, t, x_t
    ) * eps


def q_posterior_mean_variance(
    sched: DiffusionSchedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x0)."""
    mean = extract(sched.posterior_mean_coef1, t, x_t) * x0 + extract(sched.posterior_mean_coef2, t, x_t) * x_t
    return mean, extract(sched.posterior_variance, t, x_t), extract(sched.posterior_log_variance_clipped, t, x_t)


def p_mean_variance(
    sched: DiffusionSchedule,
    eps: jax.Array,
    x_t: jax.Array,
    t: jax.Array,
    clip: bool = True,
    var: str = "fixed_small",
) -> dict[str, jax.Array]:
    """p(x_{t-1} | x_t) from an epsilon prediction: dict mean, variance, log_variance, pred_x0."""
    if var not in VARIANCES:
        raise ValueError(f"p_mean_variance: var must be one of {VARIANCES}, got {var!r}")
    x0 = predict_x0(sched, x_t, t, eps)
    if clip:
        x0 = jnp.clip(x0, -1.0, 1.0)
    mean, variance, log_variance = q_posterior_mean_variance(sched, x0, x_t, t)
    if var == "fixed_large":
        variance = extract(sched.fixed_large_variance, t, x_t)
        log_variance = extract(sched.fixed_large_log_variance, t, x_t)
    return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_x0": x0}


def p_sample_step(
    sched: DiffusionSchedule,
    eps: jax.Array,
    x_t: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    clip: bool = True,
    var: str = "fixed_small",
) -> jax.Array:
    """One ancestral step x_t -> x_{t-1} = mean + exp(0.5 log_var) noise (no noise at t == 0)."""
    out = p_mean_variance(sched, eps, x_t, t, clip=clip, var=var)
    t = jnp.asarray(t, jnp.int32)
    nonzero = (t != 0).astype(x_t.dtype)
    if nonzero.ndim:
        nonzero = nonzero.reshape(nonzero.shape + (1,) * (x_t.ndim - nonzero.ndim))
    return out["mean"] + nonzero * jnp.exp(0.5 * out["log_variance"]) * noise


def space_timesteps(T: int, section_counts: int | str | Sequence[int]) -> list[int]:
    """Which trained steps to keep (sorted), as improved-diffusion's `space_timesteps`.

    An int or "250" keeps that many steps evenly spaced over [0, T-1] (first and last kept, rounded
    fractional stride); "250,100" splits [0, T) into equal sections with these counts; "ddim50"
    uses the integer DDIM stride.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            want = int(section_counts[len("ddim"):])
            for stride in range(1, T):
                if len(range(0, T, stride)) == want:
                    return list(range(0, T, stride))
            raise ValueError(f"space_timesteps: cannot create exactly {want} steps with an integer stride over T={T}")
        section_counts = [int(x) for x in section_counts.split(",")]
    elif isinstance(section_counts, (int, np.integer)):
        section_counts = [int(section_counts)]
    section_counts = list(section_counts)
    size_per = T // len(section_counts)
    extra = T % len(section_counts)
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"space_timesteps: cannot take {count} steps out of a section of {size} (T={T})")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(kept))


def respace(betas: Sequence[float] | np.ndarray, use_timesteps: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Keeps the trained steps in `use_timesteps`; returns (new betas float64 [K], timestep_map int32 [K]).

    new_beta_i = 1 - abar[k_i] / abar[k_{i-1}] (abar[k_{-1}] = 1), so the respaced process has the
    same alpha-bars at the kept steps; timestep_map[i] = k_i is what the network must be given.
    """
    betas = np.asarray(betas, dtype=np.float64)
    keep = sorted(set(int(k) for k in use_timesteps))
    if not keep or keep[0] < 0 or keep[-1] >= betas.size:
        raise ValueError(f"respace: use_timesteps must be a non-empty subset of [0, {betas.size - 1}]")
    abar = np.cumprod(1.0 - betas)
    last, new_betas = 1.0, []
    for k in keep:
        new_betas.append(1.0 - abar[k] / last)
        last = abar[k]
    return np.asarray(new_betas, dtype=np.float64), np.asarray(keep, dtype=np.int32)
