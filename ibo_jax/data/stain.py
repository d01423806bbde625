"""Stain normalization of H&E patches: Macenko (2009) and Reinhard (2001), numpy.

Macenko: optical density OD = -log((I + 1) / I0); tissue pixels (every channel's OD > beta)
span a plane whose two extreme directions (the alpha / 100 - alpha percentiles of the angle in
the plane of the top two eigenvectors) are the hematoxylin and eosin vectors. Concentrations
come from least squares; normalizing rescales them so their 99th percentiles match a
reference and re-renders them with the reference stain vectors.

Reinhard: match the per-channel mean and standard deviation of the image in CIE Lab to a
reference's (Lab by the sRGB/D65 formulas, no extra dependency).
"""

from __future__ import annotations

import numpy as np

# Macenko's reference stain (rows H, E; OD per R, G, B) and 99th-percentile concentrations.
REFERENCE_STAIN = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]], np.float64)
REFERENCE_MAX_CONC = np.array([1.9705, 1.0308], np.float64)


def _od(image: np.ndarray, io: float) -> np.ndarray:
    return -np.log((image.reshape(-1, 3).astype(np.float64) + 1.0) / io)  # [N, 3]


def macenko_stains(image: np.ndarray, *, io: float = 240.0, alpha: float = 1.0,
                   beta: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Estimates (stain matrix [2, 3] rows H, E unit OD vectors, 99th-pct concentrations [2])
    of one uint8 RGB image [H, W, 3]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] RGB, got shape {image.shape}")
    od = _od(image, io)
    tissue = od[(od > beta).all(axis=1)]
    if len(tissue) < 16:
        raise ValueError(f"only {len(tissue)} tissue pixels (OD > {beta} in every channel): "
                         "a background patch cannot be stain-normalized")
    _, vecs = np.linalg.eigh(np.cov(tissue.T))
    plane = vecs[:, 1:3]  # [3, 2] top two eigenvectors
    plane = plane * np.where(plane[0] < 0, -1.0, 1.0)  # point into positive OD
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100.0 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1])  # hematoxylin absorbs more red
    he = np.abs(he) / np.linalg.norm(he, axis=1, keepdims=True)
    conc = np.linalg.lstsq(he.T, od.T, rcond=None)[0]  # [2, N]
    return he, np.percentile(conc, 99, axis=1)


def macenko_normalize(image: np.ndarray, *, target_stain: np.ndarray = REFERENCE_STAIN,
                      target_max_conc: np.ndarray = REFERENCE_MAX_CONC, io: float = 240.0,
                      alpha: float = 1.0, beta: float = 0.15) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> the same tissue rendered with the target stain, uint8."""
    he, max_conc = macenko_stains(image, io=io, alpha=alpha, beta=beta)
    conc = np.linalg.lstsq(he.T, _od(image, io).T, rcond=None)[0]  # [2, N]
    conc *= (np.asarray(target_max_conc) / np.maximum(max_conc, 1e-6))[:, None]
    out = io * np.exp(-(np.asarray(target_stain).T @ conc))  # [3, N]
    return np.clip(np.round(out.T), 0, 255).astype(np.uint8).reshape(image.shape)


def macenko_target(reference: np.ndarray, **kwargs) -> dict[str, np.ndarray]:
    """Target stain of a reference patch: kwargs for macenko_normalize."""
    he, max_conc = macenko_stains(reference, **kwargs)
    return {"target_stain": he, "target_max_conc": max_conc}


# ----------------------------------------------------------------------------- Reinhard (Lab)
_RGB2XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                     [0.019334, 0.119193, 0.950227]])
_WHITE = np.array([0.950456, 1.0, 1.088754])


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """uint8 (or [0, 1] float) sRGB [..., 3] -> CIE Lab float64 [..., 3] (D65)."""
    x = np.asarray(image, np.float64)
    x = x / 255.0 if np.asarray(image).dtype == np.uint8 else x
    lin = np.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    xyz = lin @ _RGB2XYZ.T / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                     200.0 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab [..., 3] -> uint8 sRGB [..., 3]."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], -1)
    xyz = np.where(f > 0.206893, f**3, (f - 16.0 / 116.0) / 7.787) * _WHITE
    lin = np.clip(xyz @ np.linalg.inv(_RGB2XYZ).T, 0.0, 1.0)
    x = np.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def reinhard_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = rgb_to_lab(image).reshape(-1, 3)
    return lab.mean(0), lab.std(0)


def reinhard_normalize(image: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] with its Lab mean/std moved to the target's (see reinhard_stats)."""
    lab = rgb_to_lab(image)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
    return lab_to_rgb((lab - mean) / np.maximum(std, 1e-6) * target_std + target_mean)
