"""Noisy linear imputation (NLI, ROAD: Rong et al., ICML 2022).

Every removed pixel is the weighted mean of its 8 neighbours (1/6 for the 4 direct, 1/12 for the
4 diagonal ones), solved jointly for all removed pixels of an image as one sparse linear system,
then Gaussian noise (std 0.01 in [0, 1] units, ROAD's default) is added to the removed pixels.
Boundaries as pytorch-grad-cam's `NoisyLinearImputer`: neighbours outside the image are dropped
and the pixel's own weight is the sum of the in-image neighbours' weights, so the value is the
mean over the neighbours that exist. The system per removed pixel i is
    sum_{n in image} w_n * x_n - (sum_{n in image} w_n) * x_i = 0,  known x_n are data.

Two solvers, same system:
- 'scipy' (default): exact sparse LU per image on the host (scipy.sparse.linalg.splu);
- 'cg': batched Jacobi-preconditioned conjugate gradients in JAX on the pixel grid (matrix-free,
  jitted; for accelerators), stopped when every image's residual is below `tol` (relative).
  At 224 px with 38% of the pixels removed: 231 iterations, max |cg - exact| 1.3e-4 (0.03 of a
  uint8 step); 0.5-0.6 s per image on 2 CPU cores for either solver.
An image with every pixel removed has nothing to interpolate from: it becomes 0.5 (+ noise).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from ibo_jax.occlusion.simple import check_inputs, padded_rows
from ibo_jax.rng import example_keys

NEIGHBOURS = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
)  # ((dy, dx), weight), the ROAD reference's order
NOISE_STD = 0.01


def solve_scipy(image: np.ndarray, remove: np.ndarray) -> np.ndarray:
    """Exact linear imputation of one image [H, W, C] (float64 solve), no noise."""
    h, w, c = image.shape
    flat = image.reshape(h * w, c).astype(np.float64)
    rem = remove.reshape(h * w)
    idx = np.flatnonzero(rem)  # unknowns, row-major
    n = idx.size
    out = flat.copy()
    if n == 0:
        return out.reshape(h, w, c)
    if n == h * w:
        out[:] = 0.5
        return out.reshape(h, w, c)
    vid = np.full(h * w, -1, np.int64)
    vid[idx] = np.arange(n)
    y0, x0 = idx // w, idx % w
    rows, cols, vals = [], [], []
    diag = np.zeros(n)
    b = np.zeros((n, c))
    for (dy, dx), wt in NEIGHBOURS:
        y, x = y0 + dy, x0 + dx
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        nb = np.where(inside, y * w + x, 0)
        diag += wt * inside
        known_nb = inside & ~rem[nb]
        b[known_nb] -= wt * flat[nb[known_nb]]
        unk = inside & rem[nb]
        rows.append(np.flatnonzero(unk))
        cols.append(vid[nb[unk]])
        vals.append(np.full(int(unk.sum()), wt))
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(-diag)
    a = scipy.sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    sol = scipy.sparse.linalg.splu(a).solve(b)  # [n, C]
    out[idx] = sol
    return out.reshape(h, w, c)


def _shift(x: jax.Array, dy: int, dx: int) -> jax.Array:
    """out[:, i, j] = x[:, i + dy, j + dx], zero outside. x [B, H, W, ...]."""
    h, w = x.shape[1], x.shape[2]
    pad = [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 3)
    xp = jnp.pad(x, pad)
    return jax.lax.dynamic_slice_in_dim(jax.lax.dynamic_slice_in_dim(xp, 1 + dy, h, 1), 1 + dx, w, 2)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def solve_cg(images: jax.Array, remove: jax.Array, tol: float = 1e-6, max_iter: int = 5000):
    """Batched matrix-free PCG for the NLI system. images [B,H,W,C], remove [B,H,W] bool.

    Returns (imputed [B, H, W, C] without noise, iterations, max relative residual).
    """
    m = remove[..., None].astype(jnp.float32)  # [B, H, W, 1]
    known = 1.0 - m
    ones = jnp.ones_like(m)
    sumw = sum(wt * _shift(ones, dy, dx) for (dy, dx), wt in NEIGHBOURS)  # in-image weights
    rhs = m * sum(wt * _shift(images * known, dy, dx) for (dy, dx), wt in NEIGHBOURS)

    def op(x):  # SPD on the removed pixels: sumw * x - sum w * x_nb (removed neighbours)
        return m * (sumw * x - sum(wt * _shift(x, dy, dx) for (dy, dx), wt in NEIGHBOURS))

    n_kept = jnp.sum(known, axis=(1, 2), keepdims=True)
    mu = jnp.sum(images * known, axis=(1, 2), keepdims=True) / jnp.maximum(n_kept, 1.0)
    x = m * mu  # start from the kept pixels' mean
    r = rhs - op(x)
    z = r / sumw
    p = z
    rz = jnp.sum(r * z, axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
    bnorm = jnp.sqrt(jnp.sum(rhs * rhs, axis=(1, 2), keepdims=True))
    bnorm = jnp.maximum(bnorm, 1e-12)

    def rel(r):
        return jnp.max(jnp.sqrt(jnp.sum(r * r, axis=(1, 2), keepdims=True)) / bnorm)

    def cond(s):
        return (s[0] < max_iter) & (s[5] > tol)

    def body(s):
        it, x, r, p, rz, _ = s
        ap = op(p)
        pap = jnp.sum(p * ap, axis=(1, 2), keepdims=True)
        alpha = jnp.where(pap > 0, rz / jnp.where(pap > 0, pap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        z = r / sumw
        rz_new = jnp.sum(r * z, axis=(1, 2), keepdims=True)
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
        return it + 1, x, r, z + beta * p, rz_new, rel(r)

    it, x, r, _, _, res = jax.lax.while_loop(cond, body, (0, x, r, p, rz, rel(r)))
    x = jnp.where(n_kept > 0, x, 0.5)  # nothing known: mid-gray
    return jnp.where(remove[..., None], x, images), it, res


@jax.jit
def _add_noise(images: jax.Array, remove: jax.Array, keys: jax.Array, std: jax.Array) -> jax.Array:
    noise = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:]))(keys)
    return jnp.clip(jnp.where(remove[..., None], images + std * noise, images), 0.0, 1.0)


def nli(
    images,
    remove_mask,
    *,
    key=None,
    noise: float = NOISE_STD,
    solver: str = "scipy",
    tol: float = 1e-6,
    max_iter: int = 5000,
) -> jax.Array:
    """Noisy linear imputation of the removed pixels (noise std in [0, 1] units; 0 = none)."""
    images, remove_mask = check_inputs(images, remove_mask)
    if solver == "scipy":
        imgs, rem = np.asarray(images), np.asarray(remove_mask)
        filled = np.stack([solve_scipy(imgs[i], rem[i]) for i in range(imgs.shape[0])])
        filled = jnp.asarray(filled.astype(np.float32))
    elif solver == "cg":
        filled, _, _ = solve_cg(images, remove_mask, tol, max_iter)
    else:
        raise ValueError(f"solver: expected 'scipy' or 'cg', got {solver!r}")
    if noise < 0:
        raise ValueError(f"noise: expected a std >= 0, got {noise}")
    if noise == 0:
        return jnp.clip(filled, 0.0, 1.0)
    keys = example_keys(key, images.shape[0])
    return padded_rows(lambda x, m, k: _add_noise(x, m, k, jnp.float32(noise)), filled, remove_mask, keys)
