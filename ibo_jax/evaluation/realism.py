"""How realistic are occluded images: SSIM, PSNR, KID in the classifier's own feature space.

LPIPS (lpips.py) needs user-supplied AlexNet weights; these are always available:
- PSNR and SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1,
  mean over the valid window positions and the three channels) of each occluded image against its
  original: how much of the image changed, and how structurally.
- KID (Binkowski et al. 2018): unbiased squared MMD with the polynomial kernel
  k(x, y) = (x.y / d + 1)^3 between features of original and occluded images, where the features
  are the evaluated classifier's target-layer activations, global-average pooled (a ViT: the pooled
  embedding its linear head reads, `embed(x)`). It says how
  out-of-distribution the occluded images are *for this classifier*, and is unbiased with a few
  hundred samples (it can come out slightly negative).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax.checks import check_finite
from ibo_jax.evaluation.predict import is_token_model
from ibo_jax.parallel import map_batches


@functools.partial(jax.jit, static_argnames=("data_range",))
def psnr(a: jax.Array, b: jax.Array, data_range: float = 1.0) -> jax.Array:
    """PSNR in dB per image; a, b: [B, H, W, C]. Identical images give +inf."""
    mse = jnp.mean((jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(data_range**2 / mse)


def _valid_filter_matrix(n: int, g: np.ndarray) -> np.ndarray:
    """[n - win + 1, n] matrix whose rows hold the window g at each valid position."""
    win = len(g)
    k = np.zeros((n - win + 1, n), np.float32)
    for i in range(n - win + 1):
        k[i, i : i + win] = g
    return k


@functools.partial(jax.jit, static_argnames=("win", "sigma", "data_range"))
def _ssim(a, b, win, sigma, data_range):
    return jnp.mean(_ssim_map(a, b, win, sigma, data_range), axis=(1, 2, 3))


@functools.partial(jax.jit, static_argnames=("win", "sigma", "data_range"))
def _ssim_map(a: jax.Array, b: jax.Array, win: int, sigma: float, data_range: float) -> jax.Array:
    """SSIM per valid window position and channel: [B, H - win + 1, W - win + 1, C]."""
    r = np.arange(win, dtype=np.float64) - (win - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    g = (g / g.sum()).astype(np.float32)
    kh = jnp.asarray(_valid_filter_matrix(a.shape[1], g))  # [H', H]
    kw = jnp.asarray(_valid_filter_matrix(a.shape[2], g))  # [W', W]

    def blur(x):  # [B, H, W, C] -> [B, H', W', C]: separable Gaussian, valid positions (matmuls)
        return jnp.einsum("ph,bhwc,qw->bpqc", kh, x, kw)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim(a: jax.Array, b: jax.Array, *, win: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> jax.Array:
    """Mean SSIM per image; a, b: [B, H, W, C] in [0, data_range] -> [B] float32.

    Images smaller than the window use the largest odd window that fits.
    """
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim: expected two equal [B, H, W, C] arrays, got {a.shape} and {b.shape}")
    w = min(win, a.shape[1], a.shape[2])
    w = w if w % 2 == 1 else w - 1
    if w < 3:
        raise ValueError(f"ssim: images of {a.shape[1]}x{a.shape[2]} are too small (need >= 3x3)")
    return _ssim(a, b, w, float(sigma), float(data_range))


def masked_pair_metrics(a: np.ndarray, b: np.ndarray, mask: np.ndarray, *, win: int = 11,
                        sigma: float = 1.5) -> dict[str, np.ndarray]:
    """PSNR over the masked pixels and the mean SSIM of the windows centred in the mask, per pair:
    a, b [N, H, W, 3] in [0, 1], mask bool [N, H, W] -> {'psnr', 'ssim'} [N] (NaN where the mask
    is empty). How close a fill is to a reference (e.g. the counterfactual twin) where it filled."""
    check_finite(a, "masked_pair_metrics: a")
    check_finite(b, "masked_pair_metrics: b")
    a, b, m = np.asarray(a, np.float32), np.asarray(b, np.float32), np.asarray(mask, bool)
    if a.shape != b.shape or a.ndim != 4 or m.shape != a.shape[:3]:
        raise ValueError(f"masked_pair_metrics: expected [N, H, W, 3] x2 and [N, H, W], got {a.shape}, {b.shape}, {m.shape}")
    n_px = m.sum(axis=(1, 2)) * a.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mse = np.where(m[..., None], (a - b) ** 2, 0.0).sum(axis=(1, 2, 3)) / n_px
        out_psnr = np.minimum(10.0 * np.log10(1.0 / mse), PSNR_CAP_DB)
    w = min(win, a.shape[1], a.shape[2])
    w = w if w % 2 == 1 else w - 1
    smap = np.asarray(_ssim_map(jnp.asarray(a), jnp.asarray(b), w, float(sigma), 1.0)).mean(-1)  # [N, H', W']
    r = (w - 1) // 2
    centre = m[:, r:r + smap.shape[1], r:r + smap.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        out_ssim = np.where(centre, smap, 0.0).sum(axis=(1, 2)) / centre.sum(axis=(1, 2))
    return {"psnr": np.where(n_px > 0, out_psnr, np.nan).astype(np.float32),
            "ssim": np.where(centre.sum(axis=(1, 2)) > 0, out_ssim, np.nan).astype(np.float32)}


def kid(feats_a: np.ndarray, feats_b: np.ndarray, *, subset_size: int | None = None,
        n_subsets: int = 100, seed: int = 0, paired: bool = False) -> dict[str, float]:
    """Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel) of two feature sets.

    feats_a: [N, D], feats_b: [M, D]. With subset_size None, one estimate on all samples (std NaN);
    otherwise the mean and std over `n_subsets` random subsets of that size (as the KID paper).
    paired=True: row i of a and row i of b are two versions of one image (a fill and its
    reference): the cross term leaves those pairs out, so what they share does not count as
    closeness (the estimator stays unbiased for the distributions; N must equal M).
    """
    check_finite(feats_a, "kid: feats_a")
    check_finite(feats_b, "kid: feats_b")
    x = np.asarray(feats_a, np.float64)
    y = np.asarray(feats_b, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"kid: expected feature sets [N, D] and [M, D], got {x.shape} and {y.shape}")
    if min(x.shape[0], y.shape[0]) < 2:
        raise ValueError(f"kid: need at least 2 samples in each set, got {x.shape[0]} and {y.shape[0]}")
    if paired:
        if len(x) != len(y):
            raise ValueError(f"kid: paired sets need the same number of rows, got {len(x)} and {len(y)}")
        return {"kid": _mmd2_unbiased(x, y, paired=True), "std": float("nan"), "n": int(len(x))}
    if subset_size is None or subset_size >= min(x.shape[0], y.shape[0]):
        return {"kid": _mmd2_unbiased(x, y), "std": float("nan"), "n": int(min(len(x), len(y)))}
    rng = np.random.default_rng(seed)
    vals = [
        _mmd2_unbiased(x[rng.choice(len(x), subset_size, replace=False)],
                       y[rng.choice(len(y), subset_size, replace=False)])
        for _ in range(n_subsets)
    ]
    return {"kid": float(np.mean(vals)), "std": float(np.std(vals)), "n": int(subset_size)}


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, paired: bool = False) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    n, m = len(x), len(y)
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    sxy = (kxy.sum() - np.trace(kxy)) / (n * (n - 1)) if paired else kxy.mean()
    return float(sxx + syy - 2 * sxy)


def make_feature_fn(model: nnx.Module, *, batch_size: int = 32):
    """fn(images [N, H, W, 3] float in [0, 1]) -> [N, C] float32: global-average-pooled
    `model.features(x)` (the CAM target layer) of the evaluated classifier, in eval mode; for a
    ViT its pooled embedding `model.embed(x)` (what `predict.make_predict_fn` returns as `feat`)."""
    graphdef, state = nnx.split(model)
    token = is_token_model(model)

    @jax.jit
    def pooled(state, x):  # [B, H, W, 3] -> [B, C]
        net = nnx.merge(graphdef, state)
        if token:
            return net.embed(x).astype(jnp.float32)
        return jnp.mean(net.features(x), axis=(1, 2))

    def fn(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, np.float32)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"features: expected images [N, H, W, 3], got {x.shape}")
        out = map_batches(lambda xb: pooled(state, xb), x, batch_size=batch_size)
        return np.zeros((0, 0), np.float32) if out is None else out

    return fn


PSNR_CAP_DB = 100.0


def pair_metrics(original: np.ndarray, occluded: np.ndarray, *, batch_size: int = 64) -> dict[str, np.ndarray]:
    """PSNR and SSIM per pair; both [N, H, W, 3] floats in [0, 1] -> dict of [N] float32.

    Computed in padded batches of `batch_size` (one compiled program per image size). PSNR is
    capped at PSNR_CAP_DB (identical images would give +inf and break means and CIs).
    """
    check_finite(original, "pair_metrics: original")
    check_finite(occluded, "pair_metrics: occluded")
    a = np.asarray(original, np.float32)
    b = np.asarray(occluded, np.float32)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"pair_metrics: expected two equal [N, H, W, C] arrays, got {a.shape} and {b.shape}")
    out = map_batches(lambda xa, xb: {"psnr": np.minimum(np.asarray(psnr(xa, xb)), PSNR_CAP_DB),
                                      "ssim": ssim(xa, xb)}, a, b, batch_size=batch_size)
    return {k: np.zeros((0,), np.float32) for k in ("psnr", "ssim")} if out is None else out
