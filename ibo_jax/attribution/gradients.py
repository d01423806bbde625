"""Gradient attributions for every classifier: saliency, input x gradient, integrated gradients and
SmoothGrad, as captum 0.9.0 computes them, batched and jitted.

All are taken w.r.t. the [0, 1] image (the model normalizes inside, so captum's equivalent is a
torch model with the normalization as its first layer) for the raw logit of `target_class`.
`raw=True` returns captum's [B, H, W, 3] output (channels-last); the map reduction each method
uses by default is in its docstring (`reduce=` changes it, see `base.reduce_channels`), followed
by a per-image min-max to [0, 1]. Integrated gradients and SmoothGrad vmap their steps / samples
(one batched forward and backward); captum's `internal_batch_size` / `nt_samples_batch_size` cut
them into chunks run one after another (`jax.lax.map`) when memory is short.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ibo_jax.attribution.base import input_gradient, register

IG_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


@register("saliency", reduce="max_abs")
def saliency(model, images, target_class, *, abs: bool = True):  # noqa: A002 (captum's name)
    """Simonyan et al. 2014: raw = |d logit / d x| (captum `Saliency`, `abs=True` by default;
    `abs=False` keeps the sign). Map: max over channels of |raw| ('max_abs')."""
    g = input_gradient(model, images, target_class)  # [B, H, W, 3]
    return jnp.abs(g) if abs else g


@register("input_x_gradient", reduce="sum_abs")
def input_x_gradient(model, images, target_class):
    """raw = x * d logit / d x (captum `InputXGradient`). Map: |sum over channels| ('sum_abs',
    captum.attr.visualization's 'absolute_value')."""
    return images * input_gradient(model, images, target_class)


@functools.lru_cache(maxsize=32)
def quadrature(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, step sizes) [n_steps] float64 of captum's `approximation_parameters(method)`.

    Riemann rules use step 1/n (the trapezoid halves the first and last: its weights sum to
    (n - 1)/n, as captum's do); Gauss-Legendre maps numpy's nodes and weights from [-1, 1] to [0, 1].
    """
    if method not in IG_METHODS:
        raise ValueError(f"method: expected one of {IG_METHODS}, got {method!r}")
    n = int(n_steps)
    if n < (1 if method == "gausslegendre" else 2):
        raise ValueError(f"n_steps: expected >= {1 if method == 'gausslegendre' else 2} for {method}, got {n_steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1.0 + nodes), 0.5 * weights
    steps = np.full(n, 1.0 / n)
    kind = method.split("_")[1]
    if kind == "trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
        alphas = np.linspace(0.0, 1.0, n)
    elif kind == "left":
        alphas = np.linspace(0.0, 1.0 - 1.0 / n, n)
    elif kind == "middle":
        alphas = np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n)
    else:
        alphas = np.linspace(1.0 / n, 1.0, n)
    return alphas, steps


def map_steps(fn, xs, chunk: int | None):
    """`fn` over the leading axis of the pytree `xs`: one vmap, or `jax.lax.map` in chunks of
    `chunk` (each chunk vmapped) when chunk is smaller than the number of steps."""
    n = jax.tree.leaves(xs)[0].shape[0]
    if chunk is None or chunk >= n:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=max(1, int(chunk)))


def _chunk(batch_size: int | None, per_step: int, name: str) -> int | None:
    if batch_size is None:
        return None
    if int(batch_size) < 1:
        raise ValueError(f"{name}: expected a positive int or None, got {batch_size!r}")
    return max(1, int(batch_size) // per_step)


def _baselines(baselines, images: jax.Array) -> jax.Array:
    shape = np.shape(baselines)
    try:
        np.broadcast_shapes(shape, images.shape)
    except ValueError:
        raise ValueError(f"baselines: expected a scalar or an array broadcastable to the images' shape "
                         f"{tuple(images.shape)}, got shape {shape}") from None
    return jnp.broadcast_to(jnp.asarray(baselines, images.dtype), images.shape)


@register("integrated_gradients", reduce="sum_abs")
def integrated_gradients(model, images, target_class, *, n_steps: int = 50,
                         method: str = "gausslegendre", baselines=0.0,
                         internal_batch_size: int | None = None, multiply_by_inputs: bool = True):
    """Sundararajan et al. 2017, as captum `IntegratedGradients` (defaults as captum's):
    raw = (x - b) * sum_i w_i d logit / d x (b + a_i (x - b)) with (a_i, w_i) from `quadrature`.

    method: one of `IG_METHODS` ('riemann_trapezoid', 'gausslegendre', ...); baselines: a scalar
    or an array broadcastable to [B, H, W, 3], in [0, 1] image space (0 = black, captum's default;
    any value is allowed); internal_batch_size: captum's cap on images x steps per forward (steps
    run in chunks of internal_batch_size // B), None = all steps in one vmapped pass;
    multiply_by_inputs=False returns the integrated gradient without the (x - b) factor.
    Map: |sum over channels| ('sum_abs').
    """
    alphas, weights = quadrature(method, n_steps)
    x = images
    b = _baselines(baselines, x)
    dtype = x.dtype

    def step(a):
        return input_gradient(model, b + a * (x - b), target_class)

    grads = map_steps(step, jnp.asarray(alphas, dtype), _chunk(internal_batch_size, len(x), "internal_batch_size"))
    total = jnp.tensordot(jnp.asarray(weights, dtype), grads, axes=1)  # [B, H, W, 3]
    return total * (x - b) if multiply_by_inputs else total


def _noise(images: jax.Array, nt_samples: int, stdevs: float, seed: int, keys) -> jax.Array:
    """[S, B, H, W, 3] Gaussian noise, image b drawn from keys[b] (default fold_in(key(seed), b))."""
    if keys is None:
        root = jax.random.key(seed)
        keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(len(images)))
    elif not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        keys = jax.random.wrap_key_data(jnp.asarray(keys, jnp.uint32))
    if keys.shape != (len(images),):
        raise ValueError(f"keys: expected one PRNG key per image ({len(images)}), got key shape {keys.shape}")
    draw = jax.vmap(lambda k: jax.random.normal(k, (nt_samples, *images.shape[1:]), images.dtype))(keys)
    return jnp.swapaxes(draw, 0, 1) * jnp.asarray(stdevs, images.dtype)


@register("smoothgrad", reduce="max_abs")
def smoothgrad(model, images, target_class, *, nt_samples: int | None = None, stdevs: float = 0.15,
               nt_type: str = "smoothgrad", abs: bool = True, seed: int = 0, keys=None,  # noqa: A002
               noise=None, nt_samples_batch_size: int | None = None):
    """Smilkov et al. 2017, as captum `NoiseTunnel(Saliency)`: the saliency (`abs` as there) of
    nt_samples noisy copies x + N(0, stdevs^2), combined by nt_type: 'smoothgrad' (mean),
    'smoothgrad_sq' (mean of squares) or 'vargrad' (variance).

    Defaults differ from captum's (nt_samples=5, stdevs=1.0, meant for normalized inputs): here
    nt_samples=25 and stdevs=0.15, i.e. 15% of the [0, 1] image range (the paper's 10-20%).
    Noise: image b's draws come from keys[b] (typed PRNG keys or uint32 [B, 2]; default
    fold_in(key(seed), b), so pass keys folded from image ids for batch-independent maps), or
    `noise` [nt_samples, B, H, W, 3] is added as given (then seed, keys, stdevs are unused).
    nt_samples_batch_size: samples per vmapped chunk (captum's name), None = all at once.
    Map: max over channels of |raw| ('max_abs').
    """
    if nt_type not in NT_TYPES:
        raise ValueError(f"nt_type: expected one of {NT_TYPES}, got {nt_type!r}")
    if noise is None:
        n = 25 if nt_samples is None else int(nt_samples)
        if n < 1:
            raise ValueError(f"nt_samples: expected >= 1, got {nt_samples}")
        noise = _noise(images, n, stdevs, seed, keys)
    else:
        if noise.ndim != 5 or noise.shape[1:] != images.shape:
            raise ValueError(f"noise: expected [nt_samples, *images.shape] = [S, {', '.join(map(str, images.shape))}], "
                             f"got shape {tuple(noise.shape)}")
        if nt_samples is not None and int(nt_samples) != noise.shape[0]:
            raise ValueError(f"nt_samples: {nt_samples} differs from noise's {noise.shape[0]} samples")
        noise = jnp.asarray(noise, images.dtype)

    def sample(eps):
        g = input_gradient(model, images + eps, target_class)
        return jnp.abs(g) if abs else g

    grads = map_steps(sample, noise, _chunk(nt_samples_batch_size, 1, "nt_samples_batch_size"))
    if nt_type == "smoothgrad":
        return jnp.mean(grads, axis=0)
    sq = jnp.mean(grads**2, axis=0)
    return sq if nt_type == "smoothgrad_sq" else sq - jnp.mean(grads, axis=0) ** 2
