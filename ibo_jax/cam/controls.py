"""Control heatmaps: explanations whose quality is known, scored like CAM methods, never ranked.

    names, maps = controls.make(("random", "oracle", "graded", "oracle_shifted"), key=key,
                                index=ev["index"], tumor_mask=ev["tumor_mask"])    # maps [N, C, H, W]

- `random`: smooth random map (uniform noise on a coarse grid, bilinear upsampling), one key per
  patch index; the floor.
- `oracle`: the annotation, Gaussian-smoothed; the ceiling of plausibility.
- `graded` (expands to graded_0, graded_25, ..., graded_100): the oracle degraded on nested random
  sets S_a of smooth blobs with |S_a| = a * HW, where its values are replaced by the random map's.
  The oracle is almost binary, so blending it with noise keeps its pixel order up to a blend of
  0.5; replacing it on S_a does not: the expected tumor share of its top-q pixels falls as a
  grows, so under the counterfactual strategy the fixed-fraction deletion AUC must rise with a
  (docs/method.md). Their known order is the trust checks' test of a strategy.
- `oracle_shifted`: the oracle rolled by half the patch in both axes: plausible-looking but wrong
  (reported beside the graded ones, outside their order).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ibo_jax import rng

GRADED_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
KNOWN = ("random", "oracle", "graded", "oracle_shifted")


def graded_name(a: float) -> str:
    return f"graded_{int(round(100 * a))}"


def expand(names: Sequence[str], levels: Sequence[float] = GRADED_LEVELS) -> list[str]:
    """Control names with 'graded' expanded to one name per level."""
    bad = [c for c in names if c not in KNOWN]
    if bad:
        raise ValueError(f"explain.controls: unknown {bad}; expected some of {KNOWN}")
    out = []
    for c in names:
        out.extend(graded_name(a) for a in levels) if c == "graded" else out.append(c)
    return out


def graded_level(name: str) -> float | None:
    """a of a graded control's name (graded_25 -> 0.25), None for any other name."""
    return int(name[len("graded_"):]) / 100.0 if name.startswith("graded_") else None


def _minmax(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=(-2, -1), keepdims=True)
    return (x - lo) / (1e-7 + (x - lo).max(axis=(-2, -1), keepdims=True))


def _smooth_noise(key: jax.Array, tag: str, index: np.ndarray, size: tuple[int, int], grid: int) -> np.ndarray:
    from ibo_jax import cam

    keys = jnp.stack([rng.fold(key, tag, int(i)) for i in index])
    noise = jax.vmap(lambda k: jax.random.uniform(k, (grid, grid)))(keys)  # [N, g, g]
    return np.asarray(cam.minmax(cam.resize(noise, size)), np.float32)


def random_control(key: jax.Array, index: np.ndarray, size: tuple[int, int], grid: int) -> np.ndarray:
    """Smooth random heatmaps [N, H, W] in [0, 1], one key per patch index."""
    return _smooth_noise(key, "random", index, size, grid)


def oracle_control(masks: np.ndarray, sigma_px: float) -> np.ndarray:
    """Ground-truth masks [N, H, W] -> smoothed maps in [0, 1] (empty mask -> zeros)."""
    from scipy.ndimage import gaussian_filter

    from ibo_jax import cam

    out = np.stack([gaussian_filter(m.astype(np.float32), sigma_px, mode="nearest") for m in masks])
    return np.asarray(cam.minmax(jnp.asarray(out)), np.float32)


def nested_sets(field: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """bool [N, A, H, W]: S_a = the round(a * HW) pixels of highest `field` value, nested in a."""
    n, h, w = field.shape
    order = np.argsort(-field.reshape(n, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(h * w), order.shape), axis=1)
    counts = np.round(np.asarray(levels, np.float64) * h * w).astype(np.int64)
    return (rank[:, None, :] < counts[None, :, None]).reshape(n, len(counts), h, w)


def graded_controls(oracle: np.ndarray, random_map: np.ndarray, blobs: np.ndarray,
                    levels: Sequence[float] = GRADED_LEVELS) -> np.ndarray:
    """[N, A, H, W]: the oracle with its values on S_a (smooth blobs, |S_a| = a HW) replaced by
    the random map's."""
    sets = nested_sets(blobs, levels)
    return np.where(sets, random_map[:, None], oracle[:, None]).astype(np.float32)


def make(names: Sequence[str], *, key: jax.Array, index: np.ndarray, tumor_mask: np.ndarray,
         random_grid: int = 8, oracle_sigma: float = 0.02, blob_grid: int = 6,
         levels: Sequence[float] = GRADED_LEVELS) -> tuple[list[str], np.ndarray]:
    """(expanded names, maps float32 [N, C, H, W] in [0, 1]) of the requested controls."""
    n, h, w = tumor_mask.shape
    expanded = expand(names, levels)
    rand = random_control(key, index, (h, w), random_grid)
    oracle = oracle_control(tumor_mask, oracle_sigma * max(h, w))
    maps = []
    for c in names:
        if c == "random":
            maps.append(rand[:, None])
        elif c == "oracle":
            maps.append(oracle[:, None])
        elif c == "graded":
            blobs = _smooth_noise(key, "graded_blobs", index, (h, w), blob_grid)
            maps.append(graded_controls(oracle, rand, blobs, levels))
        elif c == "oracle_shifted":
            maps.append(np.roll(oracle, (h // 2, w // 2), axis=(-2, -1))[:, None])
    out = np.concatenate(maps, axis=1) if maps else np.zeros((n, 0, h, w), np.float32)
    return expanded, out
